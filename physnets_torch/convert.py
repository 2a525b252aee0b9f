"""Exact conversion between physnets_jax parameters and physnets_torch state_dicts.

The naming and layout rules (kernel (in, out) -> weight (out, in); embedding/scale -> weight) are
physnets_core.naming's; this file applies them to torch tensors. Functions that are handed a
physnets_jax model (rather than a flat {dotted.jax.name: array} dict or a list of names) need
physnets_jax installed and import it only when called. Values are copied bit for bit;
JAX -> torch -> JAX round trips are exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch

from physnets_core.naming import check_compatible, jax_layout_from_torch, swap_layout, torch_name

__all__ = ["torch_name", "swap_layout", "jax_to_torch", "torch_to_jax", "load_state",
           "load_jax_into_torch", "load_torch_into_jax"]


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _flat_jax_params(jax_model) -> dict[str, np.ndarray]:
    from physnets_jax.state import flat_params  # handed a JAX model: physnets_jax is installed

    return flat_params(jax_model)


def jax_to_torch(jax_params) -> OrderedDict[str, torch.Tensor]:
    """torch state_dict from a flat {dotted.jax.name: array} dict or a physnets_jax model."""
    if not isinstance(jax_params, Mapping):
        jax_params = _flat_jax_params(jax_params)
    out = OrderedDict()
    for name, value in jax_params.items():
        array = np.array(swap_layout(name, np.asarray(value)), order="C")  # keeps 0-d (scalar) parameters 0-d
        out[torch_name(name)] = torch.from_numpy(array.copy())
    return out


def torch_to_jax(state_dict: Mapping[str, torch.Tensor], jax_names) -> dict[str, np.ndarray]:
    """Flat {dotted.jax.name: numpy array} from a torch state_dict.

    `jax_names` says which JAX leaves to produce (the inverse of `torch_name` is not unique):
    an iterable of dotted JAX names, a physnets_jax model, or a ModelConfig (its JAX names are
    derived with physnets_jax).
    """
    arrays = {k: _as_numpy(v) for k, v in state_dict.items()}
    return jax_layout_from_torch(arrays, _jax_names(jax_names))


def _jax_names(spec) -> list[str]:
    from physnets_core.config import ModelConfig

    if isinstance(spec, ModelConfig):
        from physnets_jax.export import param_names  # the JAX leaves of a config need physnets_jax

        return param_names(spec)
    if hasattr(spec, "__iter__") and not isinstance(spec, str) and not hasattr(spec, "cfg"):
        return list(spec)
    return list(_flat_jax_params(spec))


def load_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load a state_dict into a physnets_torch model; ValueError lists every missing, unexpected
    and shape-mismatched key (nothing is loaded then)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_compatible(expected, {k: tuple(v.shape) for k, v in state_dict.items()}, "state_dict")
    model.load_state_dict(state_dict, strict=True)
    return model


def load_jax_into_torch(jax_model, torch_model: torch.nn.Module) -> torch.nn.Module:
    """Copy a physnets_jax model's parameters into its physnets_torch twin (exact)."""
    params = jax_to_torch(jax_model)
    dtype = next(torch_model.parameters()).dtype
    return load_state(torch_model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in params.items()})


def load_torch_into_jax(torch_model: torch.nn.Module, jax_model):
    """Copy a physnets_torch model's parameters into its physnets_jax twin (exact)."""
    from physnets_jax.state import load_flat_params

    return load_flat_params(jax_model, torch_to_jax(torch_model.state_dict(), jax_model))
