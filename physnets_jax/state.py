"""Flat views of NNX parameters ({dotted.name: array}) and strict loading of them."""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from physnets_core.naming import check_compatible


def flatten_state(state: nnx.State) -> dict[str, np.ndarray]:
    """{'blocks.0.mixer.qkv.kernel': array, ...} from an nnx.State (params or their gradients)."""
    flat = {}
    for path, value in nnx.to_flat_state(state):
        array = value.get_value() if hasattr(value, "get_value") else value
        flat[".".join(str(p) for p in path)] = np.asarray(array)
    return flat


def flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every nnx.Param of `model` as {dotted.name: numpy array}."""
    return flatten_state(nnx.state(model, nnx.Param))


def param_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """{dotted.name: shape} of every nnx.Param."""
    return {k: tuple(v.shape) for k, v in flat_params(model).items()}


def load_flat_params(model: nnx.Module, flat: Mapping[str, np.ndarray]) -> nnx.Module:
    """Replace every nnx.Param of `model` by flat[dotted.name] (strict; exact values)."""
    check_compatible(param_shapes(model), {k: tuple(np.shape(v)) for k, v in flat.items()}, "state")
    state = nnx.state(model, nnx.Param)
    leaves = nnx.to_flat_state(state)
    new = []
    for path, value in leaves:
        name = ".".join(str(p) for p in path)
        new.append((path, value.replace(jnp.asarray(flat[name]))))
    nnx.update(model, nnx.from_flat_state(new))
    return model
