"""The network input y_t = [a_{t-1}, o_{t-1}] encoded as one-hot(a, K+1) ⊕ one-hot(o, 4), plus the scaled
SNR of the last transmission when the SNR is observed (docs/design.md §1)."""

from __future__ import annotations

import numpy as np

from hapruned.validation import check_bool, check_integer, check_number

# The feedback codes (docs/design.md §1), in the order of their one-hot slots.
IDLE, ACK, NACK, PRIMARY_USER = 0, 1, -1, -2
FEEDBACK_CODES = (IDLE, ACK, NACK, PRIMARY_USER)
# feedback code -> slot in its one-hot block, indexed by code + 2 for codes -2, -1, 0, 1
FEEDBACK_SLOT = np.array([FEEDBACK_CODES.index(code) for code in range(-2, 2)], dtype=np.int64)


def observation_size(n_channels: int, observe_snr: bool = False) -> int:
    """Features per user: K + 1 action slots and 4 feedback slots, and the SNR feature with ``observe_snr``."""
    return check_integer(n_channels, "n_channels", 1) + 5 + check_bool(observe_snr, "observe_snr")


def snr_quantile(rate, snr_low: float, snr_high: float) -> np.ndarray:
    """The SNR feature, float32 of ``rate``'s shape: the SNR β = 2^rate − 1 of an observed rate
    ``log2(1 + β)``, scaled linearly from [snr_low, snr_high] onto [0, 1] (1 when snr_low == snr_high),
    i.e. its quantile among the SNRs channels are drawn from; 0 for a rate of 0 (idle or blocked). An
    SNR outside the range counts as the nearest end: the networks never saw one (docs/design.md §1)."""
    snr_low = check_number(snr_low, "snr_low", 0, low_open=True)
    snr_high = check_number(snr_high, "snr_high", snr_low)
    rate = np.asarray(rate, dtype=np.float64)
    if rate.size and not (np.isfinite(rate).all() and rate.min() >= 0):
        raise ValueError(f"rate must be finite and >= 0 (log2(1 + SNR), or 0 when nothing was observed), "
                         f"got values in {rate.min()}..{rate.max()}")
    if snr_high > snr_low:
        scaled = np.clip((np.exp2(rate) - 1.0 - snr_low) / (snr_high - snr_low), 0.0, 1.0)
    else:
        scaled = np.ones_like(rate)
    return np.where(rate > 0, scaled, 0.0).astype(np.float32)


def encode_observations(obs: np.ndarray, n_channels: int, out: np.ndarray | None = None,
                        snr_feature: np.ndarray | None = None) -> np.ndarray:
    """Encode integer observations ``obs[..., 2]`` (last action, last feedback) as float32 ``[..., K+5]``,
    or ``[..., K+6]`` with ``snr_feature`` (``obs.shape[:-1]``, values in [0, 1], see :func:`snr_quantile`)
    as the last column.

    ``out`` may be a preallocated float32 array of the result's shape, which is overwritten.
    """
    n_channels = check_integer(n_channels, "n_channels", 1)
    obs = np.asarray(obs)
    if obs.shape[-1:] != (2,) or not np.issubdtype(obs.dtype, np.integer):
        raise ValueError(
            f"obs must be integers with a last axis of size 2 (action, feedback), got {obs.dtype} {obs.shape}"
        )
    # out-of-range values would silently set a bit in the wrong block, so reject them
    actions, feedback = obs[..., 0], obs[..., 1]
    if obs.size and (actions.min() < 0 or actions.max() > n_channels or feedback.min() < -2 or feedback.max() > 1):
        raise ValueError(
            f"obs actions must lie in 0..{n_channels} and feedback codes in {FEEDBACK_CODES}, got "
            f"actions {actions.min()}..{actions.max()}, feedback {feedback.min()}..{feedback.max()}"
        )
    if snr_feature is not None:
        snr_feature = np.asarray(snr_feature)
        if snr_feature.shape != obs.shape[:-1]:
            raise ValueError(f"snr_feature must have the shape of obs without its last axis, {obs.shape[:-1]}, "
                             f"got {snr_feature.shape}")
        if snr_feature.size and not (snr_feature.min() >= 0 and snr_feature.max() <= 1):  # NaN fails too
            raise ValueError(f"snr_feature values must lie in [0, 1] (see snr_quantile), got "
                             f"{snr_feature.min()}..{snr_feature.max()}")
    shape = obs.shape[:-1] + (observation_size(n_channels, snr_feature is not None),)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        if out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
        out.fill(0.0)
    np.put_along_axis(out, obs[..., :1].astype(np.int64), 1.0, axis=-1)
    np.put_along_axis(out, (n_channels + 1 + FEEDBACK_SLOT[obs[..., 1:] + 2]), 1.0, axis=-1)
    if snr_feature is not None:
        out[..., -1] = snr_feature
    return out


def encode_env_observations(config, obs: np.ndarray, observed_rate: np.ndarray,
                            out: np.ndarray | None = None) -> np.ndarray:
    """What the users' networks read in the environment of ``config`` (a DSAConfig): ``obs[..., 2]`` encoded,
    with the feature of ``observed_rate`` (``obs.shape[:-1]``, the environment's, see :func:`snr_quantile`)
    when ``config.observe_snr``."""
    feature = snr_quantile(observed_rate, config.snr_low, config.snr_high) if config.observe_snr else None
    return encode_observations(obs, config.n_channels, out=out, snr_feature=feature)
