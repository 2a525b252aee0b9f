"""Exact conversion between physnets_jax parameters and physnets_torch state_dicts.

This file owns every layout difference between the backends, as one rule set on the leaf name:

| JAX leaf (Flax)          | torch leaf      | layout                                  |
|--------------------------|-----------------|-----------------------------------------|
| ``kernel`` (in, out)     | ``weight``      | transposed to (out, in)                 |
| ``embedding`` (V, D)     | ``weight``      | unchanged                               |
| ``scale`` (LayerNorm)    | ``weight``      | unchanged                               |
| anything else            | same name       | unchanged                               |

Module paths are identical (``blocks.0.mixer.query``), so a name maps by its last component.
Values are copied bit for bit; JAX -> torch -> JAX round trips are exact.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch

_RENAMED_LEAVES = {"kernel": "weight", "embedding": "weight", "scale": "weight"}
_TRANSPOSED_LEAVES = {"kernel"}


def torch_name(jax_name: str) -> str:
    """torch state_dict key of a dotted JAX parameter name."""
    prefix, _, leaf = jax_name.rpartition(".")
    leaf = _RENAMED_LEAVES.get(leaf, leaf)
    return f"{prefix}.{leaf}" if prefix else leaf


def swap_layout(jax_name: str, array: np.ndarray) -> np.ndarray:
    """The array of JAX leaf `jax_name` in torch layout, or back (the transpose is an involution)."""
    if jax_name.rpartition(".")[2] in _TRANSPOSED_LEAVES:
        if array.ndim != 2:
            raise ValueError(f"{jax_name}: expected a 2-D kernel, got shape {array.shape}")
        return array.T
    return array


def _as_numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def jax_to_torch(jax_params) -> OrderedDict[str, torch.Tensor]:
    """torch state_dict from a physnets_jax model or a flat {dotted.jax.name: array} dict."""
    if not isinstance(jax_params, Mapping):
        from physnets_jax.state import flat_params

        jax_params = flat_params(jax_params)
    out = OrderedDict()
    for name, value in jax_params.items():
        array = np.array(swap_layout(name, np.asarray(value)), order="C")  # keeps 0-d (scalar) parameters 0-d
        out[torch_name(name)] = torch.from_numpy(array.copy())
    return out


def torch_to_jax(state_dict: Mapping[str, torch.Tensor], jax_names) -> dict[str, np.ndarray]:
    """Flat {dotted.jax.name: numpy array} from a torch state_dict.

    `jax_names` says which JAX leaves to produce (the inverse of `torch_name` is not unique):
    a physnets_jax model, a ModelConfig, or an iterable of dotted JAX names.
    """
    names = _jax_names(jax_names)
    by_torch = {torch_name(n): n for n in names}
    unexpected = sorted(set(state_dict) - set(by_torch))
    missing = sorted(set(by_torch) - set(state_dict))
    if missing or unexpected:
        raise ValueError(
            "torch state_dict does not match the JAX model:"
            + (f"\n  missing keys ({len(missing)}): {', '.join(missing)}" if missing else "")
            + (f"\n  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}" if unexpected else "")
        )
    out = {}
    for tname, jname in by_torch.items():
        array = _as_numpy(state_dict[tname])
        out[jname] = np.array(swap_layout(jname, array), order="C")
    return out


def _jax_names(spec) -> list[str]:
    from physnets_jax.config import ModelConfig

    if isinstance(spec, ModelConfig):
        from flax import nnx

        from physnets_jax.model import Decoder
        from physnets_jax.state import flat_params

        abstract = nnx.eval_shape(lambda: Decoder(spec, rngs=nnx.Rngs(0)))
        return list(flat_params(abstract))
    if hasattr(spec, "__iter__") and not isinstance(spec, str) and not hasattr(spec, "cfg"):
        return list(spec)
    from physnets_jax.state import flat_params

    return list(flat_params(spec))


def load_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Load a state_dict into a physnets_torch model; ValueError lists every missing, unexpected
    and shape-mismatched key (nothing is loaded then)."""
    from physnets_jax.state import check_compatible

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
