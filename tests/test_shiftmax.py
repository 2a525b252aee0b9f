"""ShiftMax properties (hypothesis, both backends) against independent references.

Reference: shiftmax = floor/n + (1-floor) softmax(k asinh((x - mean x) / 2)), because the algebraic
exponential (z + sqrt(z^2+4))/2 equals exp(asinh(z/2)); the code itself never calls exp.
"""

import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from physnets_jax.ops import shiftmax as jsm
from physnets_torch.ops import shiftmax as tsm

BACKENDS = ["jax", "torch"]
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
# Jitted: hypothesis draws many shapes, and eager JAX compiles each primitive per shape.
JAX_SHIFTMAX = jax.jit(jsm.shiftmax, static_argnames=("axis", "floor", "power"))


def run(backend, x, **kw):
    """shiftmax of a float64 numpy array in one backend, as float64 numpy."""
    if backend == "jax":
        with jax.enable_x64(True):
            return np.asarray(JAX_SHIFTMAX(jnp.asarray(x, jnp.float64), **kw))
    return tsm.shiftmax(torch.as_tensor(x, dtype=torch.float64), **kw).numpy()


def reference(x, floor=jsm.DEFAULT_FLOOR, axis=-1, power=jsm.DEFAULT_POWER):
    """floor/n + (1 - floor) softmax(k asinh((x - mean) / 2)) in numpy float64."""
    x = np.asarray(x, np.float64)
    n = x.shape[axis]
    a = power * np.arcsinh((x - x.mean(axis=axis, keepdims=True)) / 2)
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return floor / n + (1 - floor) * e / e.sum(axis=axis, keepdims=True)


logits = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=7),
    elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False),
)
wide_logits = hnp.arrays(
    np.float64,
    st.integers(1, 6),
    elements=st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False),
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_values(backend):
    # x = (-2, 2): z = -+2, f(2) = 1 + sqrt 2, f(-2) = sqrt 2 - 1, sum 2 sqrt 2.
    p = run(backend, np.array([-2.0, 2.0]), floor=0.0, power=1)
    np.testing.assert_allclose(p, [(math.sqrt(2) - 1) / (2 * math.sqrt(2)),
                                   (1 + math.sqrt(2)) / (2 * math.sqrt(2))], rtol=1e-14)
    np.testing.assert_allclose(run(backend, np.zeros((2, 4))), np.full((2, 4), 0.25), rtol=1e-15)
    np.testing.assert_array_equal(run(backend, np.array([3.0])), [1.0])
    # power 2 (default): f^2 = 3 -+ 2 sqrt 2, sum 6; floor 0.1, n = 2: 0.05 + 0.9 q
    p = run(backend, np.array([-2.0, 2.0]), floor=0.1)
    np.testing.assert_allclose(p[1], 0.05 + 0.9 * (3 + 2 * math.sqrt(2)) / 6, rtol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(x=logits, floor=st.sampled_from([0.0, 0.01, 0.2]), power=st.sampled_from([1, 2, 3]))
def test_matches_reference_and_simplex(backend, x, floor, power):
    p = run(backend, x, floor=floor, power=power)
    np.testing.assert_allclose(p, reference(x, floor, power=power), rtol=1e-11, atol=1e-300)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-13)
    n = x.shape[-1]
    assert np.all(p > 0)
    assert np.all(p >= floor / n * (1 - 1e-12))
    if n > 1:  # bounded away from 1
        assert np.all(p <= 1 - floor * (n - 1) / n + 1e-12)
        assert np.all(p < 1)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(x=wide_logits)
def test_positive_and_bounded_for_huge_finite_input(backend, x):
    p = run(backend, x)  # default floor 0.01
    n = x.shape[-1]
    assert np.all(np.isfinite(p))
    assert np.all(p >= 0.01 / n * (1 - 1e-12))
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-13)
    if n > 1:
        assert p.max() <= 1 - 0.01 * (n - 1) / n + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(x=logits, c=st.floats(-1e3, 1e3))
def test_shift_invariance(backend, x, c):
    np.testing.assert_allclose(run(backend, x + c), run(backend, x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(
    x=hnp.arrays(np.float64, st.integers(2, 7), elements=st.floats(-50, 50)),
    i=st.integers(0, 6),
    delta=st.floats(1e-3, 10.0),
)
def test_monotone_in_own_logit_and_order_preserving(backend, x, i, delta):
    i = i % x.shape[0]
    y = x.copy()
    y[i] += delta
    assert run(backend, y)[i] > run(backend, x)[i]
    p = run(backend, x, floor=0.0)
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(p[order]) >= -1e-15)  # ranks preserved


@SETTINGS
@given(x=hnp.arrays(np.float64, st.integers(2, 6), elements=st.floats(-30, 30)))
def test_gradients_match_reference_and_diagonal_positive(x):
    with jax.enable_x64(True):
        _check_gradients(x)


def _reference_jax(v):
    n = v.shape[-1]
    a = 2 * jnp.arcsinh((v - jnp.mean(v)) / 2)
    return 0.01 / n + 0.99 * jax.nn.softmax(a)


# jitted: one compilation per drawn length instead of an eager trace of every example
JAC_SHIFTMAX = jax.jit(jax.jacobian(lambda v: jsm.shiftmax(v)))
JAC_REFERENCE = jax.jit(jax.jacobian(_reference_jax))


def _check_gradients(x):
    jac = np.asarray(JAC_SHIFTMAX(jnp.asarray(x)))
    np.testing.assert_allclose(jac, np.asarray(JAC_REFERENCE(jnp.asarray(x))),
                               rtol=1e-9, atol=1e-13)
    assert np.all(np.diag(jac) > 0)
    np.testing.assert_allclose(jac.sum(0), 0.0, atol=1e-13)  # outputs stay on the simplex
    xt = torch.tensor(x, requires_grad=True)
    jt = torch.autograd.functional.jacobian(lambda v: tsm.shiftmax(v), xt)
    np.testing.assert_allclose(jt.numpy(), jac, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_at_zero_is_smooth(backend):
    """d f / d z at z = 0 is 1/2 (a naive |z| would give 0 there)."""
    if backend == "jax":
        with jax.enable_x64(True):
            g = float(jax.grad(jsm.algebraic_exp)(jnp.float64(0.0)))
    else:
        z = torch.zeros((), dtype=torch.float64, requires_grad=True)
        tsm.algebraic_exp(z).backward()
        g = float(z.grad)
    assert g == pytest.approx(0.5, rel=1e-15)


def test_no_exponential_in_the_jaxpr():
    jaxpr = str(jax.make_jaxpr(lambda v: jsm.shiftmax(v))(jnp.ones((3, 5))))
    for primitive in ("exp", "log", "logistic", "tanh", "pow", "integer_pow", "asinh"):
        assert f" {primitive}[" not in jaxpr and f"= {primitive} " not in jaxpr, primitive
    assert "sqrt" in jaxpr or "hypot" in jaxpr


@pytest.mark.parametrize("backend", BACKENDS)
def test_axis_argument(backend):
    x = np.random.default_rng(0).normal(size=(3, 4, 5))
    if backend == "jax":
        p = np.asarray(jsm.shiftmax(jnp.asarray(x, jnp.float32), axis=1))
    else:
        p = tsm.shiftmax(torch.as_tensor(x, dtype=torch.float32), dim=1).numpy()
    ref = np.moveaxis(reference(np.moveaxis(x, 1, -1)), -1, 1)
    np.testing.assert_allclose(p, ref, rtol=2e-6)
    assert p.dtype == np.float32


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_propagates_nan_to_its_slice_only(backend, bad):
    x = np.array([[0.5, bad, -1.0], [0.1, 0.2, 0.3]])
    p = run(backend, x)
    assert np.all(np.isnan(p[0])), p
    np.testing.assert_allclose(p[1], reference(x[1]), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_check_finite_raises(backend):
    x = np.array([[0.5, np.nan, -1.0]])
    check = jsm.check_finite if backend == "jax" else tsm.check_finite
    arg = jnp.asarray(x) if backend == "jax" else torch.as_tensor(x)
    with pytest.raises(ValueError, match=r"shiftmax input must be finite, got nan at index \(0, 1\)"):
        check(arg)
    check(arg[:, :1] if backend == "jax" else arg[:, :1])  # finite: no error


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    fn = jsm.shiftmax if backend == "jax" else tsm.shiftmax
    to = jnp.asarray if backend == "jax" else torch.as_tensor
    with pytest.raises(ValueError, match=r"floor=1.0 must be in \[0, 1\)"):
        fn(to(np.ones(3)), floor=1.0)
    with pytest.raises(ValueError, match=r"floor=-0.1 must be in \[0, 1\)"):
        fn(to(np.ones(3)), floor=-0.1)
    with pytest.raises(ValueError, match=r"power=0 must be an integer in \[1, 8\]"):
        fn(to(np.ones(3)), power=0)
    with pytest.raises(ValueError, match=r"power=1.5 must be an integer"):
        fn(to(np.ones(3)), power=1.5)
    with pytest.raises(ValueError, match="floating-point input"):
        fn(to(np.ones(3, np.int32)))
    with pytest.raises(ValueError, match="at least one axis"):
        fn(to(np.float32(1.0)))


def test_jit_and_debug_nans():
    f = jax.jit(jsm.shiftmax)
    np.testing.assert_allclose(np.asarray(f(jnp.array([1.0, 2.0, 3.0]))),
                               reference([1.0, 2.0, 3.0]), rtol=1e-6)
    with jax.debug_nans(True), pytest.raises(FloatingPointError):
        jsm.shiftmax(jnp.array([1.0, jnp.inf, 3.0])).block_until_ready()


@pytest.mark.parametrize("backend", BACKENDS)
def test_gate_normaliser(backend):
    x = np.random.default_rng(3).normal(size=(2, 3, 4)).astype(np.float32)
    if backend == "jax":
        get, arr = jsm.gate_normaliser, jnp.asarray
        soft = np.asarray(jax.nn.softmax(arr(x), axis=1))
    else:
        get, arr = tsm.gate_normaliser, torch.as_tensor
        soft = torch.softmax(arr(x), 1).numpy()
    np.testing.assert_allclose(np.asarray(get("softmax")(arr(x), 1)), soft, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(get("shiftmax")(arr(x), 1)),
                               np.moveaxis(reference(np.moveaxis(x, 1, -1)), -1, 1), rtol=2e-6)
    with pytest.raises(ValueError, match="gate normaliser 'sparsemax' is not known"):
        get("sparsemax")
