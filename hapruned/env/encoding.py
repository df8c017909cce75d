"""The network input y_t = [a_{t-1}, o_{t-1}] encoded as one-hot(a, K+1) ⊕ one-hot(o, 4) (docs/design.md §1)."""

import numpy as np

from hapruned.validation import check_integer

# The feedback codes (docs/design.md §1), in the order of their one-hot slots.
IDLE, ACK, NACK, PRIMARY_USER = 0, 1, -1, -2
FEEDBACK_CODES = (IDLE, ACK, NACK, PRIMARY_USER)
# feedback code -> slot in its one-hot block, indexed by code + 2 for codes -2, -1, 0, 1
FEEDBACK_SLOT = np.array([FEEDBACK_CODES.index(code) for code in range(-2, 2)], dtype=np.int64)


def observation_size(n_channels: int) -> int:
    """Features per user: K + 1 action slots and 4 feedback slots."""
    return n_channels + 5


def encode_observations(obs: np.ndarray, n_channels: int, out: np.ndarray | None = None) -> np.ndarray:
    """Encode integer observations ``obs[..., 2]`` (last action, last feedback) as float32 ``[..., K+5]``.

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
    shape = obs.shape[:-1] + (observation_size(n_channels),)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        if out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 of shape {shape}, got {out.dtype} {out.shape}")
        out.fill(0.0)
    np.put_along_axis(out, obs[..., :1].astype(np.int64), 1.0, axis=-1)
    np.put_along_axis(out, (n_channels + 1 + FEEDBACK_SLOT[obs[..., 1:] + 2]), 1.0, axis=-1)
    return out
