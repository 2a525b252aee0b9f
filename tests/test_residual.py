"""Orthogonal-parallel residual: op against a per-token numpy loop, layer init, config, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from physnets_core.config import ModelConfig, preset
from physnets_jax.layers.residual import OrthogonalParallelResidual as JOP
from physnets_jax.model import build_model as jbuild
from physnets_jax.model import count_params
from physnets_jax.ops.residual import orthogonal_parallel_update as jupdate
from physnets_torch.layers.residual import OrthogonalParallelResidual as TOP
from physnets_torch.model import build_model as tbuild
from physnets_torch.ops.residual import orthogonal_parallel_update as tupdate


def loop_reference(x, y, alpha, beta, variant):
    """Token-by-token float64 numpy evaluation of the published formulas."""
    out = np.empty_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        xv, yv = x[idx], y[idx]
        proj = float(xv @ yv) / max(float(xv @ xv), 1e-8)
        parallel = proj * xv if variant == "projection" else proj * yv / yv.sum()
        out[idx] = xv + alpha * (yv - proj * xv) + beta * parallel
    return out


def run(backend, *arrays, variant):
    if backend == "jax":
        with jax.enable_x64(True):
            return np.asarray(jupdate(*[jnp.asarray(a) for a in arrays], variant))
    return tupdate(*[torch.as_tensor(a) for a in arrays], variant).numpy()


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("variant", ["projection", "reference"])
def test_matches_loop_reference(backend, variant):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 3, 8)) + 0.3
    alpha, beta = rng.normal(0.25, 0.5, 8), rng.normal(0.15, 0.25, 8)
    got = run(backend, x, y, alpha, beta, variant=variant)
    np.testing.assert_allclose(got, loop_reference(x, y, alpha, beta, variant), rtol=1e-12)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_split_is_orthogonal_and_parallel(backend):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    ones, zeros = np.ones(6), np.zeros(6)
    orth = run(backend, x, y, ones, zeros, variant="projection") - x
    np.testing.assert_allclose(np.sum(orth * x, -1), 0.0, atol=1e-12)
    par = run(backend, x, y, zeros, ones, variant="projection") - x
    proj = np.sum(x * y, -1, keepdims=True) / np.sum(x * x, -1, keepdims=True)
    np.testing.assert_allclose(par, proj * x, rtol=1e-12)
    # alpha = beta = 1 in the projection variant recovers the plain residual x + y
    np.testing.assert_allclose(run(backend, x, y, ones, ones, variant="projection"), x + y,
                               rtol=1e-12)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_zero_stream_uses_norm_floor(backend):
    x, y = np.zeros((1, 4)), np.arange(1.0, 5.0)[None]
    out = run(backend, x, y, np.full(4, 0.5), np.full(4, 2.0), variant="projection")
    np.testing.assert_allclose(out, 0.5 * y)  # proj = 0 / 1e-8 = 0: finite


def test_layer_params_and_init_statistics():
    cfg = ModelConfig(n_embd=4096, n_head=1, residual="orthogonal_parallel")
    layer = JOP(cfg, 0, rngs=nnx.Rngs(0))
    a, b = np.asarray(layer.alpha[...]), np.asarray(layer.beta[...])
    assert a.shape == b.shape == (4096,)
    assert abs(a.mean() - 0.25) < 0.05 and abs(a.std() - 0.5) < 0.05
    assert abs(b.mean() - 0.15) < 0.025 and abs(b.std() - 0.25) < 0.025
    t = TOP(cfg, 0).requires_grad_(False)
    assert abs(float(t.alpha.mean()) - 0.25) < 0.05 and abs(float(t.alpha.std()) - 0.5) < 0.05
    assert abs(float(t.beta.mean()) - 0.15) < 0.025 and abs(float(t.beta.std()) - 0.25) < 0.025
    assert sorted(n for n, _ in t.named_parameters()) == ["alpha", "beta"]


def test_config_field_and_variant_selection():
    cfg = preset("ripplegpt", "nano", residual="orthogonal_parallel", residual_variant="reference")
    assert JOP(cfg, 0, rngs=nnx.Rngs(0)).variant == "reference"
    assert TOP(cfg, 0).variant == "reference"
    assert ModelConfig().residual_variant == "projection"
    with pytest.raises(ValueError, match="residual_variant='textbook' is not a known variant"):
        ModelConfig(residual_variant="textbook")


@pytest.mark.parametrize("name", ["gpt", "ripplegpt"])
def test_models_build_with_the_residual(name):
    base = preset(name, "nano")
    cfg = base.replace(residual="orthogonal_parallel")
    jm, tm = jbuild(cfg), tbuild(cfg)
    extra = 4 * cfg.n_embd * cfg.n_layer  # alpha and beta for both sublayers of every block
    assert count_params(jm) == count_params(jbuild(base)) + extra
    assert sum(p.numel() for p in tm.parameters()) == count_params(jm)
    assert jm(jnp.zeros((1, 3), jnp.int32)).shape == (1, 3, cfg.vocab_size)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_inputs(backend):
    x = np.ones((2, 4))
    msg = r"x and y must have the same shape, got x \(2, 4\) and y \(2, 3\)"
    with pytest.raises(ValueError, match=msg):
        run(backend, x, np.ones((2, 3)), np.ones(4), np.ones(4), variant="projection")
    with pytest.raises(ValueError, match=r"alpha must have shape \(\) or \(4,\).*got shape \(3,\)"):
        run(backend, x, x, np.ones(3), np.ones(4), variant="projection")
    with pytest.raises(ValueError, match="variant='sideways' is not a known"):
        run(backend, x, x, np.ones(4), np.ones(4), variant="sideways")


def _plain_update(x, y, alpha, beta, variant):
    """The update written out in jnp, for jax.grad to differentiate (the custom backward's reference)."""
    proj = jnp.sum(x * y, -1, keepdims=True) / jnp.maximum(jnp.sum(x * x, -1, keepdims=True), 1e-8)
    parallel = proj * x if variant == "projection" else proj * y / jnp.sum(y, -1, keepdims=True)
    return x + alpha * (y - proj * x) + beta * parallel


@pytest.mark.parametrize("variant", ["projection", "reference"])
@pytest.mark.parametrize("coef_shape", [(), (1,), (8,)])
def test_jax_backward_matches_autodiff_of_plain_update(variant, coef_shape):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(2, 3, 8)), rng.normal(size=(2, 3, 8)) + 0.3
    x[0, 1] = 0.0  # a token whose ||x||^2 is under the floor: proj = 0, no gradient through the floor
    alpha, beta = rng.normal(0.25, 0.5, coef_shape), rng.normal(0.15, 0.25, coef_shape)
    weights = rng.normal(size=x.shape)
    with jax.enable_x64(True):
        args = [jnp.asarray(a) for a in (x, y, alpha, beta)]

        def loss(update):
            return lambda *a: jnp.sum(jnp.asarray(weights) * update(*a, variant))

        got = jax.grad(loss(jupdate), argnums=(0, 1, 2, 3))(*args)
        want = jax.grad(loss(_plain_update), argnums=(0, 1, 2, 3))(*args)
    for name, g, w in zip(("x", "y", "alpha", "beta"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-10, atol=1e-12, err_msg=name)
