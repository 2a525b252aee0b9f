"""JAX vs torch for the lof310 components: ShiftMax (values and gradients), the
orthogonal-parallel residual (layer and whole models), and gradient conditioning (10 steps).

Tolerances: harness.TOL (float64 1e-10, float32 1e-5, relative to scale; same algorithm).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from parity_tests.harness import JNP, TOL, TORCH, assert_close, compare, twin
from physnets_core.config import preset
from physnets_jax import losses as jlosses
from physnets_jax.layers.residual import OrthogonalParallelResidual as JOP
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.ops.shiftmax import shiftmax as jshiftmax
from physnets_jax.optim import condition_gradients
from physnets_torch import losses as tlosses
from physnets_torch.layers.residual import OrthogonalParallelResidual as TOP
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.ops.shiftmax import shiftmax as tshiftmax
from physnets_torch.optim import ConditionedOptimizer

# ----------------------------------------------------------------------------------- shiftmax

@pytest.mark.parametrize("shape, axis", [((5,), -1), ((2, 3, 7), -1), ((4, 6), 0), ((3, 1), -1)])
@pytest.mark.parametrize("floor", [0.0, 0.01])
def test_shiftmax_values_and_gradients(shape, axis, floor, dtype):
    rng = np.random.default_rng(0)
    x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    w = rng.standard_normal(shape).astype(dtype)  # loss = sum(w * p): generic gradients

    def jloss(v):
        p = jshiftmax(v, axis=axis, floor=floor)
        return jnp.sum(jnp.asarray(w) * p), p

    (jl, jp), jg = jax.jit(jax.value_and_grad(jloss, has_aux=True))(jnp.asarray(x, JNP[dtype]))
    xt = torch.tensor(x, dtype=TORCH[dtype], requires_grad=True)
    tp = tshiftmax(xt, dim=axis, floor=floor)
    tl = torch.sum(torch.as_tensor(w) * tp)
    tl.backward()
    tol = TOL[dtype]
    assert_close(jp, tp.detach().numpy(), tol, "shiftmax values")
    assert_close(jl, float(tl.detach()), tol, "loss")
    assert_close(jg, xt.grad.numpy(), tol, "grad x")


# ----------------------------------------------------------------------------------- residual

def _res_loss(m, x, y):
    out = m(x, y)
    return ((out**2).sum() if isinstance(out, torch.Tensor) else jnp.sum(out**2)), out


@pytest.mark.parametrize("variant", ["projection", "reference"])
@pytest.mark.parametrize("shape", [(1, 1), (2, 7)])
def test_residual_layer_parity(variant, shape, dtype):
    cfg = preset("ripplegpt", "nano", residual="orthogonal_parallel", residual_variant=variant)
    jl, tl = twin(JOP(cfg, 0, rngs=nnx.Rngs(0)), TOP(cfg, 0), dtype)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((*shape, cfg.n_embd)).astype(dtype)
    # an offset keeps sum_d(y) away from 0, which the reference variant divides by
    y = (rng.standard_normal((*shape, cfg.n_embd)) + 0.5).astype(dtype)
    compare(jl, tl, _res_loss, _res_loss, [x, y], dtype)


def _lm_loss_jax(m, tokens, targets):
    logits = m(tokens)
    return jlosses.cross_entropy(logits, targets), logits


def _lm_loss_torch(m, tokens, targets):
    logits = m(tokens)
    return tlosses.cross_entropy(logits, targets), logits


MODEL_CASES = {
    "ripplegpt-op": preset("ripplegpt", "nano", dropout=0.0, residual="orthogonal_parallel"),
    "ripplegpt-op-reference": preset(
        "ripplegpt", "nano", dropout=0.0, residual="orthogonal_parallel",
        residual_variant="reference",
    ),
    "gpt-op": preset("gpt", "nano", dropout=0.0, residual="orthogonal_parallel"),
}


# Whole models are slow in eager JAX on CPU: a few (case, shape, dtype) combinations only.
@pytest.mark.parametrize(
    "name, shape, dt",
    [
        ("ripplegpt-op", (2, 13), "float64"),
        ("ripplegpt-op-reference", (1, 5), "float64"),
        ("gpt-op", (1, 1), "float32"),
    ],
)
def test_model_parity(name, shape, dt):
    cfg = MODEL_CASES[name]
    with jax.enable_x64(dt == "float64"):
        jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dt)
        rng = np.random.default_rng(1)
        tokens = rng.integers(0, cfg.vocab_size, shape)
        targets = rng.integers(0, cfg.vocab_size, shape)
        compare(jm, tm, _lm_loss_jax, _lm_loss_torch, [tokens, targets], dt)


# ------------------------------------------------------------------------------- conditioning

SHAPES = {"a_conv": (3, 3, 2, 4), "b_dense": (8, 5), "c_bias": (5,), "d_gain": (1,)}


@pytest.mark.parametrize("mode", ["schedule", "learned"])
def test_conditioning_ten_steps(mode, dtype):
    """Same params and gradient sequence for 10 steps -> same params, momentum and state."""
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()}
    grads = [{k: (rng.standard_normal(s) + 0.2 * t).astype(dtype) for k, s in SHAPES.items()}
             for t in range(10)]
    kw = dict(hyper_lr=0.05, depth_gain=0.7, size_power=0.3, center=0.4)

    tx = optax.chain(condition_gradients(mode, **kw), optax.sgd(0.01, momentum=0.9))
    jp = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(jp)
    update = jax.jit(tx.update)
    for g in grads:
        u, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, jp)
        jp = optax.apply_updates(jp, u)

    tp = [torch.nn.Parameter(torch.tensor(params[k])) for k in sorted(SHAPES)]
    opt = ConditionedOptimizer(torch.optim.SGD(tp, lr=0.01, momentum=0.9), mode, **kw)
    for g in grads:
        for p, k in zip(tp, sorted(SHAPES), strict=True):
            p.grad = torch.tensor(g[k])
        opt.step()

    cond, trace = state[0], state[1][0]
    tol = TOL[dtype]
    assert int(cond.count) == opt.count == 10
    for p, k in zip(tp, sorted(SHAPES), strict=True):
        assert_close(jp[k], p.detach().numpy(), tol, f"param {k}")
        assert_close(trace.trace[k], opt.optimizer.state[p]["momentum_buffer"].numpy(), tol,
                     f"momentum {k}")
        assert_close(cond.scale[k], opt.state[p]["scale"].numpy(), tol, f"scale {k}")
        assert_close(cond.shift[k], opt.state[p]["shift"].numpy(), tol, f"shift {k}")
        if mode == "learned":
            assert_close(cond.prev_grad[k], opt.state[p]["prev_grad"].numpy(), tol, f"prev {k}")
        assert np.asarray(jp[k]).dtype == p.detach().numpy().dtype == np.dtype(dtype)
