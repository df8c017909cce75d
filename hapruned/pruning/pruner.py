"""Magnitude pruning of grouped weights under a sparsity schedule (docs/design.md §3).

Every listed weight has shape ``[G, ...]``: group (agent) g owns ``weight[g]``. By default one
magnitude threshold per group covers all listed weights together (flatten each to ``[G, -1]``,
concatenate to ``[G, M]``, keep the largest ``M - round(p * M)``); ``per_matrix=True`` puts a
threshold on each matrix instead. Ranking and exact counts come from ``hapruned.ops.magnitude_prune_mask``.

Modes:

- ``regrow`` (the paper's): an event writes zeros into the smallest weights in place; between
  events every weight trains, so zeroed ones can grow back, and the next event re-ranks everything.
- ``masked`` (Zhu & Gupta, as ``torch.nn.utils.prune``): the parameter plays ``weight_orig`` and
  the keep-mask lives in the owning module's buffer ``<weight>_mask``, bool unless the module already
  holds a float one (the grouped modules apply it in their ops, so masked entries get zero gradient).
  An event recomputes the mask from ``|weight_orig|``, so when the target falls the pruned weights
  with the largest magnitudes return, and has the owning modules rebuild their compressed layouts
  (``update_sparse_layouts``), with which the grouped modules compute at the kept weights only.

In both modes an event zeroes the optimiser state (e.g. Adam's ``exp_avg``, ``exp_avg_sq``; not
``step``) of every pruned entry, so stale momentum neither pushes a masked ``weight_orig`` nor
drives a zeroed weight.

Events: ``step(i)`` is called after the update of iteration ``i = 1..total_iterations``; an event
runs when ``i >= i_start`` and ``(i - i_start) % i_prune == 0``, at the schedule's sparsity of
iteration ``i``, and always at ``i = total_iterations`` with ``p_final``, so the final weights are
exactly ``p_final`` sparse.
"""

import torch
from torch import nn

from hapruned import ops
from hapruned.pruning.schedules import SparsitySchedule
from hapruned.validation import check_choice, check_integer

MODES = ("regrow", "masked")


class Pruner:
    """Prunes ``parameter_names`` of ``module`` (each ``[G, ...]``) on the events of ``schedule``.

    module: the module holding the weights. parameter_names: names in ``module.named_parameters()``
    (never biases). schedule: a ``SparsitySchedule`` with ``groups == G``. mode: one of ``MODES``.
    i_prune: iterations between events. i_start: first event iteration (default: the schedule's).
    total_iterations: the last iteration, where the final ``p_final`` event runs. optimizer: its
    state of pruned entries is zeroed at each event (None: no optimiser state to reset).
    per_matrix: one threshold per matrix instead of one per group over all matrices.
    """

    def __init__(
        self,
        module: nn.Module,
        parameter_names,
        schedule: SparsitySchedule,
        *,
        mode: str = "regrow",
        i_prune: int = 5,
        i_start: int | None = None,
        total_iterations: int,
        optimizer: torch.optim.Optimizer | None = None,
        per_matrix: bool = False,
    ):
        if not isinstance(schedule, SparsitySchedule):
            raise TypeError(f"schedule must be a SparsitySchedule (see make_schedule), got {type(schedule).__name__}")
        check_choice(mode, "mode", MODES)
        i_prune, total_iterations = check_integer(i_prune, "i_prune", 1), check_integer(total_iterations, "total_iterations", 1)
        i_start = check_integer(schedule.i_start if i_start is None else i_start, "i_start", 0)
        self.schedule, self.mode, self.i_prune, self.i_start = schedule, mode, i_prune, i_start
        self.total_iterations, self.optimizer, self.per_matrix = total_iterations, optimizer, per_matrix
        self.names = list(parameter_names)
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"parameter_names must name at least one weight, each once, got {self.names}")
        self.params = [self._lookup(module, name) for name in self.names]
        # masked mode: each mask buffer's owner and attribute name, e.g. (module.lstm, "weight_ih_l0_mask").
        self._mask_slots = []
        for name, param in zip(self.names, self.params):
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name)
            slot = f"{attr}_mask"
            if slot not in owner._buffers:
                if mode == "masked":
                    raise ValueError(
                        f"masked mode needs a buffer {slot!r} on module {owner_name or 'root'!r} that its forward applies "
                        f"(GroupedLSTM and GroupedLinear declare one per weight); {type(owner).__name__} has none"
                    )
                owner, slot = None, None
            elif mode == "masked" and getattr(owner, slot) is None:
                # All-ones masks from the start keep the module's state_dict keys fixed for resuming. Bool:
                # a quarter of a float mask's memory, and the CPU kernels read it as it is.
                setattr(owner, slot, torch.ones_like(param, dtype=torch.bool))
            self._mask_slots.append((owner, slot))
        self.last_event: int | None = None

    def _lookup(self, module: nn.Module, name: str) -> nn.Parameter:
        params = dict(module.named_parameters())
        if name not in params:
            candidates = [n for n, p in params.items() if not n.rpartition(".")[2].startswith("bias")]
            raise ValueError(f"parameter_names: {name!r} is not a parameter of the module; its weights are {candidates}")
        if name.rpartition(".")[2].startswith("bias"):
            raise ValueError(f"parameter_names: biases are never pruned, got {name!r}")
        param = params[name]
        if param.ndim < 2 or param.shape[0] != self.schedule.groups:
            raise ValueError(
                f"parameter_names: {name!r} must be a grouped weight of shape [{self.schedule.groups}, ...] "
                f"(groups of the schedule first), got {tuple(param.shape)}"
            )
        return param

    def _masks(self) -> list:
        """The mask buffer of each weight (None where there is none)."""
        return [None if owner is None else getattr(owner, slot) for owner, slot in self._mask_slots]

    def effective_weights(self) -> list[torch.Tensor]:
        """Each weight times its mask (if any), detached: what the forward pass uses."""
        return [p.detach() if m is None else p.detach() * m for p, m in zip(self.params, self._masks())]

    def step(self, iteration: int) -> bool:
        """Advance the schedule to ``iteration`` (1..total_iterations) and prune if an event is due.

        Returns True when an event ran.
        """
        if iteration != self.schedule.last_iteration + 1 or not 1 <= iteration <= self.total_iterations:
            raise ValueError(
                f"iteration must be the next one, {self.schedule.last_iteration + 1} (of 1..{self.total_iterations}), "
                f"got {iteration}; call step once after every iteration's update"
            )
        self.schedule.step()
        if iteration == self.total_iterations:
            self.apply(self.schedule.p_final)
        elif iteration >= self.i_start and (iteration - self.i_start) % self.i_prune == 0:
            self.apply(self.schedule.get_last_sparsity())
        else:
            return False
        self.last_event = iteration
        return True

    @torch.no_grad()
    def apply(self, sparsity) -> None:
        """One prune event at ``sparsity`` (float or [G]) per group; see the module docstring."""
        sparsity = torch.as_tensor(sparsity, dtype=torch.float64)
        # regrow ranks the weights the network uses; masked ranks |weight_orig|, the parameters themselves.
        ranked = self.effective_weights() if self.mode == "regrow" else [p.detach() for p in self.params]
        groups = self.schedule.groups
        if self.per_matrix:
            keeps = [ops.magnitude_prune_mask(w.reshape(groups, -1), sparsity) for w in ranked]
        else:
            flat = torch.cat([w.reshape(groups, -1) for w in ranked], dim=1)
            keeps = ops.magnitude_prune_mask(flat, sparsity).split([w[0].numel() for w in ranked], dim=1)
        for param, keep, (owner, slot) in zip(self.params, keeps, self._mask_slots):
            keep = keep.reshape(param.shape)
            if self.mode == "regrow":
                param.masked_fill_(~keep, 0)
            else:
                mask = getattr(owner, slot)
                mask.copy_(keep)
            self._reset_optimizer_state(param, keep)
        if self.mode == "masked":  # the owners' compressed layouts of the new masks (hapruned.nn.grouped)
            owners = {id(owner): owner for owner, _ in self._mask_slots}
            for owner in owners.values():
                if hasattr(owner, "update_sparse_layouts"):
                    owner.update_sparse_layouts()

    def _reset_optimizer_state(self, param: torch.Tensor, keep: torch.Tensor) -> None:
        if self.optimizer is None:
            return
        for value in self.optimizer.state.get(param, {}).values():
            # Per-entry state (exp_avg, exp_avg_sq, momentum_buffer, ...); scalar ``step`` is left alone.
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                value.masked_fill_(~keep, 0)

    @torch.no_grad()
    def sparsity(self) -> torch.Tensor:
        """Fraction of zero effective weights per group over all pruned weights, float64 [G]."""
        zeros = sum((w.reshape(self.schedule.groups, -1) == 0).sum(1) for w in self.effective_weights())
        total = sum(w[0].numel() for w in self.params)
        return zeros.to(torch.float64).cpu() / total

    @torch.no_grad()
    def sparsity_per_matrix(self) -> dict[str, torch.Tensor]:
        """Fraction of zero effective weights per group of each weight: name -> float64 [G]."""
        return {
            name: (w.reshape(self.schedule.groups, -1) == 0).to(torch.float64).mean(1).cpu()
            for name, w in zip(self.names, self.effective_weights())
        }

    def state_dict(self) -> dict:
        """The schedule's state and the last event; weights and masks live in the module's state_dict."""
        return {"schedule": self.schedule.state_dict(), "last_event": self.last_event}

    def load_state_dict(self, state: dict) -> None:
        self.schedule.load_state_dict(state["schedule"])
        self.last_event = state["last_event"]
