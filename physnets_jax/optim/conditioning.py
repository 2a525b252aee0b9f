"""Gradient conditioning (lof310): g' = scale * g + shift, one (scale, shift) pair per tensor.

An optax GradientTransformation meant to sit before the optimizer:

    optax.chain(condition_gradients("schedule"), optax.sgd(0.01, momentum=0.9))

lof310 publishes only the outline; physnets defines two ways of obtaining the pair.

``mode="schedule"`` (static, from each tensor's size, rank and depth position d in [0, 1],
d = 0 for the first tensor of the tree, 1 for the last):

    scale = clip(base_scale * (1 + depth_gain * (1 - d)) * size_factor, scale_min, scale_max)
    size_factor = (median_size / size) ** size_power   for rank >= 2 (median over rank>=2 tensors)
                = vector_scale                           for rank <= 1 (biases, norm gains)
    shift = -center * scale * mean(g)  for rank >= 2 (partial gradient centralisation), else 0

``mode="learned"`` (online, hypergradient rule with its own small rate ``hyper_lr``): with the
previous raw gradient g_prev of the same tensor and c = cos(g, g_prev) (0 at the first step),

    scale <- clip(scale * (1 + hyper_lr * c), scale_min, scale_max)
    shift <- (1 - hyper_lr) * shift + hyper_lr * mean(g)

c estimates -d loss / d scale up to a positive factor (the loss after a step of -lr g_prev
changes by -lr <g, g_prev>), so scale grows while consecutive gradients agree and shrinks when
they oscillate; shift follows the hypergradient of the loss w.r.t. a common offset (-lr sum(g))
with a decay that pulls it back to 0 when the gradient vanishes, so fixed points are unchanged.

Leaves that are not floating point (int step counters, float0 gradients) pass through unchanged.
Numeric arguments may be injected with ``optax.inject_hyperparams``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from physnets_core.checks import MODES, check_condition_args, default_depths


class ConditionState(NamedTuple):
    """State of condition_gradients: step count and per-tensor scale, shift, previous gradient."""

    count: jax.Array  # int32 scalar, number of updates so far
    scale: Any  # pytree like the params: one scalar per tensor
    shift: Any  # pytree like the params: one scalar per tensor
    prev_grad: Any  # "learned": previous raw gradient per tensor; "schedule": scalar zeros


def is_float(leaf) -> bool:
    """Whether a leaf is a floating-point array (the leaves that get conditioned)."""
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def schedule_scale(size: int, rank: int, depth: float, median_size: float, *, base_scale,
                   depth_gain, size_power, vector_scale, scale_min, scale_max):
    """The schedule-mode scale of one tensor (jnp scalar) from its size, rank and depth."""
    depth_factor = 1.0 + depth_gain * (1.0 - depth)
    if rank >= 2:
        size_factor = jnp.power(median_size / size, size_power)
    else:
        size_factor = jnp.asarray(vector_scale)
    return jnp.clip(base_scale * depth_factor * size_factor, scale_min, scale_max)


def condition_gradients(
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
) -> optax.GradientTransformation:
    """optax transform g' = scale * g + shift per float tensor (mode "schedule" or "learned").

    depths: relative depth in [0, 1] of each floating-point tensor in tree-flatten order
    (default i / (n - 1)). schedule mode uses base_scale, depth_gain, size_power, vector_scale,
    center; learned mode uses hyper_lr (scale starts at 1, shift at 0). Both clip the scale to
    [scale_min, scale_max].
    """
    numbers = dict(base_scale=base_scale, depth_gain=depth_gain, size_power=size_power,
                   vector_scale=vector_scale, center=center, hyper_lr=hyper_lr,
                   scale_min=scale_min, scale_max=scale_max)
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a known conditioning mode; valid: {', '.join(MODES)}")

    def static_schedule(leaves):
        """Per-float-leaf scales (schedule mode) in leaf order; None for non-float leaves."""
        float_idx = [i for i, leaf in enumerate(leaves) if is_float(leaf)]
        check_condition_args(mode, depths, len(float_idx), **numbers)
        ds = list(depths) if depths is not None else default_depths(len(float_idx))
        big = [int(leaves[i].size) for i in float_idx if leaves[i].ndim >= 2]
        median = float(statistics.median(big)) if big else 1.0
        out = [None] * len(leaves)
        for d, i in zip(ds, float_idx, strict=True):
            leaf = leaves[i]
            s = schedule_scale(int(leaf.size), leaf.ndim, float(d), median,
                               base_scale=base_scale, depth_gain=depth_gain, size_power=size_power,
                               vector_scale=vector_scale, scale_min=scale_min, scale_max=scale_max)
            out[i] = s.astype(leaf.dtype)
        return out

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        if mode == "schedule":
            scales = static_schedule(leaves)
        else:
            check_condition_args(mode, depths, sum(map(is_float, leaves)), **numbers)
            scales = [jnp.ones((), leaf.dtype) if is_float(leaf) else None for leaf in leaves]
        scale = [s if s is not None else jnp.ones((), jnp.float32) for s in scales]
        shift = [jnp.zeros((), leaf.dtype) if is_float(leaf) else jnp.zeros((), jnp.float32)
                 for leaf in leaves]
        if mode == "learned":
            prev = [jnp.zeros_like(leaf) if is_float(leaf) else jnp.zeros((), jnp.float32)
                    for leaf in leaves]
        else:
            prev = [jnp.zeros((), jnp.float32) for _ in leaves]
        unflat = treedef.unflatten
        return ConditionState(jnp.zeros((), jnp.int32), unflat(scale), unflat(shift), unflat(prev))

    def update_fn(updates, state, params=None):
        del params
        leaves, treedef = jax.tree.flatten(updates)
        old_scale = treedef.flatten_up_to(state.scale)
        old_shift = treedef.flatten_up_to(state.shift)
        old_prev = treedef.flatten_up_to(state.prev_grad)
        sched = static_schedule(leaves) if mode == "schedule" else None
        new_g, new_scale, new_shift, new_prev = [], [], [], []
        for i, g in enumerate(leaves):
            if not is_float(g):
                new_g.append(g)
                new_scale.append(old_scale[i])
                new_shift.append(old_shift[i])
                new_prev.append(old_prev[i])
                continue
            dtype = g.dtype
            mean_g = jnp.mean(g)
            if mode == "schedule":
                scale = sched[i]
                shift = (-center * scale * mean_g).astype(dtype) if g.ndim >= 2 else jnp.zeros((), dtype)
                prev = old_prev[i]
            else:
                prev_g = old_prev[i]
                dot = jnp.sum(g * prev_g)
                denom = jnp.sqrt(jnp.sum(g * g)) * jnp.sqrt(jnp.sum(prev_g * prev_g))
                cos = jnp.where(denom > 0, dot / jnp.where(denom > 0, denom, 1.0), 0.0)
                scale = jnp.clip(old_scale[i] * (1.0 + hyper_lr * cos), scale_min, scale_max)
                shift = (1.0 - hyper_lr) * old_shift[i] + hyper_lr * mean_g
                scale, shift = scale.astype(dtype), shift.astype(dtype)
                prev = g
            new_g.append((scale * g + shift).astype(dtype))
            new_scale.append(scale)
            new_shift.append(shift)
            new_prev.append(prev)
        unflat = treedef.unflatten
        new_state = ConditionState(optax.safe_increment(state.count), unflat(new_scale),
                                   unflat(new_shift), unflat(new_prev))
        return unflat(new_g), new_state

    return optax.GradientTransformation(init_fn, update_fn)
