"""physnets_jax.ops.trig: float32 sin and cos by range reduction, against float64 numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physnets_jax.ops import trig

# 2 ulp of 1.0 in float32; the reduction and polynomials measured 1.6 ulp at most
TOLERANCE = 2 * np.spacing(np.float32(1.0))


def _grid(limit: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    points = [rng.uniform(-limit, limit, 200_000), np.linspace(-limit, limit, 200_001),
              np.pi / 4 * np.arange(-64, 65), [0.0, -0.0, 1e-30, -1e-30]]
    return np.concatenate(points).astype(np.float32)


@pytest.mark.parametrize("limit", [1.0, 10.0, 1000.0, trig.REDUCTION_LIMIT])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_float32_values_match_float64_numpy(name, limit):
    x = _grid(limit)
    got = np.asarray(jax.jit(getattr(trig, name))(x), dtype=np.float64)
    want = getattr(np, name)(x.astype(np.float64))
    assert np.max(np.abs(got - want)) <= TOLERANCE


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_entries_beyond_the_reduction_take_the_library_function(name):
    # one large entry sends the whole array to jnp.sin / jnp.cos, which reduce exactly
    x = np.array([0.5, -3.0, 1e6, -3.5e7, 2.0 ** 100], np.float32)
    got = np.asarray(jax.jit(getattr(trig, name))(x), dtype=np.float64)
    want = getattr(np, name)(x.astype(np.float64))
    assert np.max(np.abs(got - want)) <= TOLERANCE
    special = np.asarray(getattr(trig, name)(np.array([1.0, np.inf, -np.inf, np.nan], np.float32)))
    assert np.isclose(special[0], getattr(np, name)(1.0), atol=TOLERANCE)
    assert np.all(np.isnan(special[1:]))


def test_derivatives_are_cos_and_minus_sin():
    x = _grid(20.0)[:5000]
    dsin = jax.vmap(jax.grad(trig.sin))(jnp.asarray(x))
    dcos = jax.vmap(jax.grad(trig.cos))(jnp.asarray(x))
    x64 = x.astype(np.float64)
    assert np.max(np.abs(np.asarray(dsin, np.float64) - np.cos(x64))) <= TOLERANCE
    assert np.max(np.abs(np.asarray(dcos, np.float64) + np.sin(x64))) <= TOLERANCE
    second = jax.grad(jax.grad(trig.sin))(jnp.float32(0.7))
    assert np.isclose(float(second), -np.sin(0.7), atol=TOLERANCE)


def test_other_dtypes_keep_the_library_function_and_their_dtype():
    with jax.enable_x64(True):
        x = np.linspace(-50.0, 50.0, 1001)
        got = trig.sin(jnp.asarray(x))
        assert got.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.sin(jnp.asarray(x))))
    half = trig.cos(jnp.asarray([0.0, 1.0], jnp.bfloat16))
    assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_only_cpu_lowerings_take_the_reduction(name):
    # GPUs and TPUs keep the library function: the reduction's lax.cond would sync with the host
    x = jnp.linspace(-3.0, 3.0, 64, dtype=jnp.float32)
    fn = jax.jit(getattr(trig, name))
    for platform, reduced in (("cpu", True), ("cuda", False), ("tpu", False)):
        text = jax.export.export(fn, platforms=[platform])(x).mlir_module()
        assert ("round_nearest_even" in text) == reduced, platform
        assert f"stablehlo.{'sine' if name == 'sin' else 'cosine'}" in text, platform
