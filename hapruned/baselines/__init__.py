"""Non-learning access schemes and the centralised oracle bound, with a batched evaluation loop.

Every scheme is a :class:`Policy`; :func:`evaluate` plays it on the batched simulator.
"""

from hapruned.baselines.aloha import SlottedAloha, optimal_aloha_p
from hapruned.baselines.base import Policy, evaluate, held_out_rewards
from hapruned.baselines.oca import OpportunisticChannelAware
from hapruned.baselines.oracle import Oracle, decentralised_bound, max_weight_matching, mean_rate
from hapruned.baselines.sticky import StickyAccess

# name on the command line -> scheme class
SCHEMES = {
    "aloha": SlottedAloha,
    "oca": OpportunisticChannelAware,
    "sticky": StickyAccess,
    "oracle": Oracle,
}

__all__ = [
    "OpportunisticChannelAware",
    "Oracle",
    "Policy",
    "SCHEMES",
    "SlottedAloha",
    "StickyAccess",
    "decentralised_bound",
    "evaluate",
    "held_out_rewards",
    "max_weight_matching",
    "mean_rate",
    "optimal_aloha_p",
]
