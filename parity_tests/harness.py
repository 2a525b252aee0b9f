"""Parity harness: build JAX/torch twins with identical weights and compare values and gradients.

Tolerances (DESIGN section 3), as max |jax - torch| <= tol * max(1, max |torch|):
  float64, same algorithm: 1e-10;  float32, same algorithm: 1e-5.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

from physnets_jax.model import cast_params
from physnets_jax.state import flatten_state
from physnets_torch.convert import jax_to_torch, load_jax_into_torch

TOL = {"float64": 1e-10, "float32": 1e-5}
JNP = {"float64": jnp.float64, "float32": jnp.float32}
TORCH = {"float64": torch.float64, "float32": torch.float32}


def assert_close(actual, expected, tol: float, what: str, scale: float | None = None) -> None:
    """max |actual - expected| <= tol * max(1, scale), scale defaulting to max |expected|."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    scale = max(1.0, scale)
    err = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    assert err <= tol * scale, f"{what}: max abs diff {err:.3e} > {tol:.0e} x scale {scale:.3g}"


def twin(jax_module: nnx.Module, torch_module: torch.nn.Module, dtype: str):
    """Cast both modules to `dtype` and copy the JAX weights into the torch module (exact)."""
    cast_params(jax_module, JNP[dtype])
    torch_module.to(TORCH[dtype])
    load_jax_into_torch(jax_module, torch_module)
    jax_module.eval()
    torch_module.eval()
    return jax_module, torch_module


@functools.lru_cache(maxsize=64)
def _jitted_value_and_grad(loss_fn: Callable, argnums: tuple[int, ...]):
    """nnx.jit(nnx.value_and_grad(loss_fn)), one per (loss_fn, argnums): calls with a module of the
    same structure and inputs of the same shapes reuse the compilation, across tests too."""
    return nnx.jit(nnx.value_and_grad(loss_fn, argnums=argnums, has_aux=True))


def jax_value_and_grads(module: nnx.Module, loss_fn: Callable, *inputs):
    """loss_fn(module, *inputs) -> (scalar, out); returns (loss, out, torch-named param grads,
    input grads).

    Jitted: one XLA compilation of the whole forward and backward costs less CPU time than
    compiling each primitive eagerly (compile time dominates these small tests on CPU).
    """
    diff_inputs = tuple(i for i, x in enumerate(inputs) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating))
    grad_fn = _jitted_value_and_grad(loss_fn, (0, *[i + 1 for i in diff_inputs]))
    (loss, out), grads = grad_fn(module, *[jnp.asarray(x) for x in inputs])
    param_grads = {k: v.numpy() for k, v in jax_to_torch(flatten_state(grads[0])).items()}
    return float(loss), np.asarray(out), param_grads, [np.asarray(g) for g in grads[1:]]


def torch_value_and_grads(module: torch.nn.Module, loss_fn: Callable, *inputs):
    """Same as jax_value_and_grads for the torch twin."""
    tensors = []
    for x in inputs:
        t = torch.from_numpy(np.array(x))
        if t.is_floating_point():
            t.requires_grad_(True)
        tensors.append(t)
    module.zero_grad(set_to_none=True)
    loss, out = loss_fn(module, *tensors)
    loss.backward()
    param_grads = {n: p.grad.numpy() for n, p in module.named_parameters() if p.grad is not None}
    input_grads = [t.grad.numpy() for t in tensors if t.is_floating_point()]
    return float(loss.detach()), out.detach().numpy(), param_grads, input_grads


def compare(jax_module, torch_module, jax_loss, torch_loss, inputs, dtype: str, tol: float | None = None):
    """Assert equal loss, output, every parameter gradient and every float input gradient."""
    tol = TOL[dtype] if tol is None else tol
    jl, jo, jg, jig = jax_value_and_grads(jax_module, jax_loss, *inputs)
    tl, to, tg, tig = torch_value_and_grads(torch_module, torch_loss, *inputs)
    assert_close(jl, tl, tol, "loss")
    assert_close(jo, to, tol, "output")
    named = dict(torch_module.named_parameters())
    assert set(jg) == set(named), f"gradient keys differ: {sorted(set(jg) ^ set(named))}"
    # Parameter gradients are compared relative to the largest gradient entry of the module: a
    # parameter whose exact gradient is 0 (a key bias under softmax) otherwise carries round-off only.
    grad_scale = max((float(np.max(np.abs(g))) for g in tg.values() if g.size), default=1.0)
    for name in named:
        expected = tg.get(name, np.zeros(named[name].shape))
        assert_close(jg[name], expected, tol, f"grad {name}", scale=grad_scale)
    assert len(jig) == len(tig)
    for i, (a, b) in enumerate(zip(jig, tig, strict=True)):
        assert_close(a, b, tol, f"grad input {i}")
