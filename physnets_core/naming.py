"""The parameter naming and layout rules between physnets_jax (Flax) and physnets_torch.

| JAX leaf (Flax)          | torch leaf      | layout                                  |
|--------------------------|-----------------|-----------------------------------------|
| ``kernel`` (in, out)     | ``weight``      | transposed to (out, in)                 |
| ``embedding`` (V, D)     | ``weight``      | unchanged                               |
| ``scale`` (LayerNorm)    | ``weight``      | unchanged                               |
| anything else            | same name       | unchanged                               |

Module paths are identical (``blocks.0.mixer.query``), so a name maps by its last component.
Both backends' converters (physnets_torch.convert, physnets_jax.export) apply these rules and
no others; values are copied bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

RENAMED_LEAVES = {"kernel": "weight", "embedding": "weight", "scale": "weight"}
TRANSPOSED_LEAVES = {"kernel"}


def torch_name(jax_name: str) -> str:
    """torch state_dict key of a dotted JAX parameter name."""
    prefix, _, leaf = jax_name.rpartition(".")
    leaf = RENAMED_LEAVES.get(leaf, leaf)
    return f"{prefix}.{leaf}" if prefix else leaf


def swap_layout(jax_name: str, array):
    """The array of JAX leaf `jax_name` in torch layout, or back (the transpose is an involution).
    Works on numpy arrays, JAX arrays and torch tensors (anything with .ndim and .T)."""
    if jax_name.rpartition(".")[2] in TRANSPOSED_LEAVES:
        if array.ndim != 2:
            raise ValueError(f"{jax_name}: expected a 2-D kernel, got shape {tuple(array.shape)}")
        return array.T
    return array


def torch_names_by_jax(jax_names: Iterable[str]) -> dict[str, str]:
    """{torch name: JAX name} for the given JAX names (the inverse of torch_name is not unique)."""
    return {torch_name(n): n for n in jax_names}


def check_compatible(
    expected: Mapping[str, tuple[int, ...]], given: Mapping[str, tuple[int, ...]], what: str
) -> None:
    """Raise ValueError listing missing, unexpected and shape-mismatched keys of `given`."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{k}: expected {tuple(expected[k])}, got {tuple(given[k])}"
        for k in sorted(set(expected) & set(given))
        if tuple(expected[k]) != tuple(given[k])
    ]
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the model:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if mismatched:
            lines.append(f"  shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        raise ValueError("\n".join(lines))


def jax_layout_from_torch(arrays: Mapping[str, np.ndarray], jax_names: Iterable[str]) -> dict[str, np.ndarray]:
    """Flat {dotted.jax.name: numpy array} from {torch name: array} (numpy), for the JAX leaves
    `jax_names`; ValueError lists missing and unexpected keys."""
    by_torch = torch_names_by_jax(jax_names)
    unexpected = sorted(set(arrays) - set(by_torch))
    missing = sorted(set(by_torch) - set(arrays))
    if missing or unexpected:
        raise ValueError(
            "torch state_dict does not match the JAX model:"
            + (f"\n  missing keys ({len(missing)}): {', '.join(missing)}" if missing else "")
            + (f"\n  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}" if unexpected else "")
        )
    # np.array(order="C"), not np.ascontiguousarray: the latter turns 0-d (scalar) parameters into (1,)
    return {j: np.array(swap_layout(j, np.asarray(arrays[t])), order="C") for t, j in by_torch.items()}


def torch_layout_from_jax(flat_jax: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{torch name: contiguous numpy array} from flat {dotted.jax.name: array}."""
    return {torch_name(k): np.array(swap_layout(k, np.asarray(v)), order="C") for k, v in flat_jax.items()}
