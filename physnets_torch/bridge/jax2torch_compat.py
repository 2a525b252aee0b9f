"""The upstream jax2torch 0.0.7 package made usable on current JAX/torch: what we replace, in
one place (see physnets_torch.bridge for the five failures)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from physnets_torch.bridge.interop import jax_to_tensor, tensor_to_jax

# ---------------------------------------------------------------------------------------------
# 2. The upstream package: what we replace, in one place
# ---------------------------------------------------------------------------------------------


def _upstream_t2j(x_torch):
    return tensor_to_jax(x_torch)


def _upstream_j2t(x_jax):
    return jax_to_tensor(x_jax)


# Upstream names in jax2torch.jax2torch -> our replacement. Upstream's tree_t2j/tree_j2t and
# jax2torch look these names up as module globals at call time, so replacing them suffices.
_UPSTREAM_REPLACEMENTS = {"t2j": _upstream_t2j, "j2t": _upstream_j2t}


def upstream_module():
    """The upstream module `jax2torch.jax2torch` (the package this bridge depends on)."""
    return importlib.import_module("jax2torch.jax2torch")


def patch_jax2torch() -> dict[str, Callable]:
    """Install our DLPack converters into jax2torch 0.0.7 so `jax2torch.jax2torch(fn)` runs on
    current JAX/torch (positional float tensors; its other limits stay, see module docs).
    Returns the replaced upstream functions (pass them to `unpatch_jax2torch` to restore)."""
    module = upstream_module()
    previous = {}
    for attr, replacement in _UPSTREAM_REPLACEMENTS.items():
        previous[attr] = getattr(module, attr)
        setattr(module, attr, replacement)
    return previous


def unpatch_jax2torch(previous: dict[str, Callable]) -> None:
    """Restore the upstream functions returned by `patch_jax2torch`."""
    module = upstream_module()
    for attr, original in previous.items():
        setattr(module, attr, original)


