"""Gradient conditioning (lof310), torch twin: g' = scale * g + shift per parameter tensor.

``ConditionedOptimizer(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), "schedule")``
wraps any torch optimizer: a step pre-hook rewrites every ``p.grad`` in place before the inner
step. Same formulas, defaults and state as physnets_jax/optim/conditioning.py (see there).
Depth positions follow the order of the parameters in the optimizer's param_groups.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch

from physnets_core.checks import check_condition_args, default_depths


def schedule_scale(size: int, rank: int, depth: float, median_size: float, *, base_scale,
                   depth_gain, size_power, vector_scale, scale_min, scale_max) -> float:
    """The schedule-mode scale of one tensor (Python float) from its size, rank and depth."""
    depth_factor = 1.0 + depth_gain * (1.0 - depth)
    size_factor = (median_size / size) ** size_power if rank >= 2 else vector_scale
    return min(max(base_scale * depth_factor * size_factor, scale_min), scale_max)


class ConditionedOptimizer:
    """Wraps a torch optimizer; before each step sets p.grad = scale * p.grad + shift per tensor.

    mode "schedule" (scale from size, rank, depth; shift = -center * scale * mean(g) for rank >= 2)
    or "learned" (hypergradient rule with rate hyper_lr). `state[p]` holds 'scale', 'shift' and,
    in learned mode, 'prev_grad'; `count` the number of conditioned steps.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mode: str = "schedule",
        *,
        depths: Sequence[float] | None = None,
        base_scale: float = 1.0,
        depth_gain: float = 0.5,
        size_power: float = 0.25,
        vector_scale: float = 1.0,
        center: float = 0.5,
        hyper_lr: float = 1e-3,
        scale_min: float = 0.1,
        scale_max: float = 10.0,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer)}")
        self.optimizer = optimizer
        self.mode = mode
        self.hparams = dict(base_scale=base_scale, depth_gain=depth_gain, size_power=size_power,
                            vector_scale=vector_scale, center=center, hyper_lr=hyper_lr,
                            scale_min=scale_min, scale_max=scale_max)
        params = self._params()
        check_condition_args(mode, depths, len(params), **self.hparams)
        self.depths = list(depths) if depths is not None else default_depths(len(params))
        self.count = 0
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        big = [p.numel() for p in params if p.dim() >= 2]
        median = float(statistics.median(big)) if big else 1.0
        for p, d in zip(params, self.depths, strict=True):
            if mode == "schedule":
                s = schedule_scale(p.numel(), p.dim(), float(d), median, **{
                    k: v for k, v in self.hparams.items() if k not in ("center", "hyper_lr")})
            else:
                s = 1.0
            entry = {"scale": torch.tensor(s, dtype=p.dtype, device=p.device),
                     "shift": torch.zeros((), dtype=p.dtype, device=p.device)}
            if mode == "learned":
                entry["prev_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            self.state[p] = entry
        self._hook = optimizer.register_step_pre_hook(self._pre_step)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @torch.no_grad()
    def condition(self) -> None:
        """Apply g' = scale * g + shift to every p.grad (and update the learned state)."""
        hp = self.hparams
        for p in self._params():
            if p.grad is None:
                continue
            st = self.state[p]
            g = p.grad
            mean_g = g.mean()
            if self.mode == "schedule":
                scale = st["scale"]
                shift = -hp["center"] * scale * mean_g if g.dim() >= 2 else torch.zeros_like(mean_g)
            else:
                prev = st["prev_grad"]
                dot = torch.sum(g * prev)
                denom = torch.sqrt(torch.sum(g * g)) * torch.sqrt(torch.sum(prev * prev))
                cos = torch.where(denom > 0, dot / torch.where(denom > 0, denom, 1.0),
                                  torch.zeros_like(dot))
                scale = torch.clamp(st["scale"] * (1.0 + hp["hyper_lr"] * cos),
                                    hp["scale_min"], hp["scale_max"])
                shift = (1.0 - hp["hyper_lr"]) * st["shift"] + hp["hyper_lr"] * mean_g
                st["prev_grad"] = g.clone()
            st["scale"], st["shift"] = scale, shift
            p.grad = scale * g + shift
        self.count += 1

    def _pre_step(self, optimizer, args, kwargs) -> None:
        self.condition()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Evaluate `closure` (if any) with gradients enabled, then condition and step once."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Delegate to the inner optimizer."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @property
    def param_groups(self):
        """The inner optimizer's param_groups (learning rates live there)."""
        return self.optimizer.param_groups

    def state_dict(self) -> dict:
        """{'optimizer': inner state_dict, 'conditioning': {index: state}, 'count': int}."""
        cond = {i: {k: v.clone() for k, v in self.state[p].items()}
                for i, p in enumerate(self._params())}
        return {"optimizer": self.optimizer.state_dict(), "conditioning": cond,
                "count": self.count, "mode": self.mode}

    def load_state_dict(self, state: dict) -> None:
        """Restore from state_dict() output (strict about mode and parameter count)."""
        if state.get("mode") != self.mode:
            raise ValueError(f"state_dict mode={state.get('mode')!r} != mode={self.mode!r}")
        params = self._params()
        if len(state["conditioning"]) != len(params):
            raise ValueError(f"state_dict has {len(state['conditioning'])} tensors, "
                             f"optimizer has {len(params)}")
        self.optimizer.load_state_dict(state["optimizer"])
        for i, p in enumerate(params):
            self.state[p] = {k: v.to(p.device).clone() for k, v in state["conditioning"][i].items()}
        self.count = int(state["count"])

    def remove_hook(self) -> None:
        """Detach the pre-step hook (the inner optimizer then steps on raw gradients)."""
        self._hook.remove()
