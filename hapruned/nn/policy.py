"""Actions from a policy's logits, drawn one way everywhere: training, evaluation and exported actors."""

import torch


def sample_actions(logits: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """The most likely actions (``greedy``) or actions drawn from the policy: the first action whose
    cumulative probability exceeds a uniform draw from ``generator``, one per row of logits (..., n_actions)."""
    if greedy:
        return logits.argmax(-1)
    u = torch.rand(logits.shape[:-1] + (1,), generator=generator, device=logits.device)
    return (torch.softmax(logits, -1).cumsum(-1) < u).sum(-1).clamp_(max=logits.shape[-1] - 1)
