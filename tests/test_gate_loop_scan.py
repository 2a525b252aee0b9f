"""GateLoop scan h_t = a_t h_{t-1} + kv_t: every implementation against a plain loop, both backends.

References are independent of the code under test: a NumPy loop over positions (values) and
autograd through that loop (torch gradients) or through lax.scan (JAX gradients).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax.ops import gate_loop as jops
from physnets_torch.ops import gate_loop as tops

LENGTHS = [1, 2, 3, 127, 256, 1000]
# Jitted: eager JAX compiles every primitive per shape, which is slower than one compile.
JAX_SCANS = {
    "associative": jax.jit(jops.gate_loop_scan, static_argnames="axis"),
    "chunked": jax.jit(lambda a, kv, axis=1, h0=None: jops.gate_loop_scan_chunked(a, kv, axis=axis, h0=h0, chunk=16),
                       static_argnames="axis"),
}
JAX_SEQUENTIAL = jax.jit(jops.gate_loop_scan_sequential, static_argnames="axis")
TORCH_METHODS = tops.METHODS


def _inputs(T, *, complex_, seed=0, shape=(2, None, 3), a_shape=None, h0=False):
    """a with |a| in (0.5, 1) and kv ~ N(0, 1), float64 / complex128 NumPy arrays."""
    rng = np.random.default_rng(seed)
    shape = tuple(T if s is None else s for s in shape)
    a_shape = shape if a_shape is None else tuple(T if s is None else s for s in a_shape)
    mag = 1 / (1 + np.exp(-np.abs(rng.normal(size=a_shape)) - 0.2))
    a = mag * (np.exp(1j * rng.uniform(-np.pi, np.pi, a_shape)) if complex_ else 1.0)
    kv = rng.normal(size=shape) + (1j * rng.normal(size=shape) if complex_ else 0.0)
    h0v = None
    if h0:
        h0_shape = shape[:1] + shape[2:]
        h0v = rng.normal(size=h0_shape) + (1j * rng.normal(size=h0_shape) if complex_ else 0.0)
    return a, kv, h0v


def _numpy_loop(a, kv, h0=None, axis=1):
    a = np.broadcast_to(a, kv.shape)
    a_T, kv_T = np.moveaxis(a, axis, 0), np.moveaxis(kv, axis, 0)
    h = np.zeros_like(kv_T[0]) if h0 is None else np.asarray(h0, kv.dtype)
    out = []
    for t in range(kv_T.shape[0]):
        h = a_T[t] * h + kv_T[t]
        out.append(h)
    return np.moveaxis(np.stack(out), 0, axis)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("T", LENGTHS)
def test_jax_scans_match_loop_float64(x64, T, complex_):
    """associative and chunked scans equal the sequential loop (float64, with h0) at every length."""
    a, kv, h0 = _inputs(T, complex_=complex_, h0=True)
    expected = _numpy_loop(a, kv, h0)
    for name, fn in {**JAX_SCANS, "sequential": JAX_SEQUENTIAL}.items():
        got = np.asarray(fn(jnp.asarray(a), jnp.asarray(kv), axis=1, h0=jnp.asarray(h0)))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("T", LENGTHS)
def test_torch_scans_match_loop_float64(T, complex_):
    """Both torch methods equal the loop (float64, with h0); gradients equal autograd through a
    Python loop, for a, kv and h0."""
    a, kv, h0 = _inputs(T, complex_=complex_, h0=True)
    expected = _numpy_loop(a, kv, h0)
    rng = np.random.default_rng(1)
    w = torch.from_numpy(rng.normal(size=kv.shape) + (1j * rng.normal(size=kv.shape) if complex_ else 0))

    def grads(fn):
        ts = [torch.from_numpy(np.array(x)).requires_grad_() for x in (a, kv, h0)]
        h = fn(*ts)
        loss = (h * w).real.sum() if complex_ else (h * w).sum()
        return h.detach().numpy(), [g.numpy() for g in torch.autograd.grad(loss, ts)]

    def loop(a_, kv_, h0_):
        state, out = h0_, []
        for t in range(T):
            state = a_[:, t] * state + kv_[:, t]
            out.append(state)
        return torch.stack(out, 1)

    _, ref_grads = grads(loop)
    for method in TORCH_METHODS:
        got, got_grads = grads(lambda a_, kv_, h0_, m=method: tops.gate_loop_scan(a_, kv_, h0=h0_, method=m))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12, err_msg=method)
        for name, g, r in zip(("a", "kv", "h0"), got_grads, ref_grads, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-11, err_msg=f"{method} grad {name}")


def _plain_scan(a, kv, axis=1, h0=None):
    """h_t = a_t h_{t-1} + kv_t by a plain lax.scan, differentiated by XLA's autodiff (the reference
    for every JAX scan's gradient; gate_loop_scan_sequential has a hand-written backward)."""
    a_T = jnp.moveaxis(jnp.broadcast_to(a, kv.shape), axis, 0)
    kv_T = jnp.moveaxis(kv, axis, 0)
    h_init = jnp.zeros_like(kv_T[0]) if h0 is None else h0

    def step(h, a_kv):
        h = a_kv[0] * h + a_kv[1]
        return h, h

    return jnp.moveaxis(jax.lax.scan(step, h_init, (a_T, kv_T))[1], 0, axis)


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("a_shape", [(2, None, 3), (2, None, 1)], ids=["full", "broadcast"])
def test_jax_gradients_match_plain_scan_float64(x64, complex_, a_shape):
    """Gradients of every JAX scan w.r.t. a, kv and h0 equal jax.grad of a plain lax.scan, with
    `a` of kv's shape or broadcast over its last axis."""
    T = 127
    a, kv, h0 = _inputs(T, complex_=complex_, h0=True, a_shape=a_shape)
    w = jnp.asarray(_inputs(T, complex_=complex_, seed=3)[1])

    def loss(fn):
        return lambda a_, kv_, h0_: jnp.sum(jnp.real(w * fn(a_, kv_, axis=1, h0=h0_)))

    args = [jnp.asarray(x) for x in (a, kv, h0)]
    ref = jax.jit(jax.grad(loss(_plain_scan), argnums=(0, 1, 2)))(*args)
    assert min(float(jnp.max(jnp.abs(r))) for r in ref) > 1e-2  # real gradients, not all-zero ones
    for name, fn in {**JAX_SCANS, "sequential": JAX_SEQUENTIAL}.items():
        got = jax.jit(jax.grad(loss(fn), argnums=(0, 1, 2)))(*args)
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-11, atol=1e-11, err_msg=name)


def test_float32_long_sequence_close_to_loop():
    """float32 at T=1000: within 1e-5 of the float64 loop (round-off of a different summation order)."""
    a, kv, _ = _inputs(1000, complex_=False)
    expected = _numpy_loop(a, kv)
    scale = np.abs(expected).max()
    for name, fn in JAX_SCANS.items():
        got = np.asarray(fn(jnp.asarray(a, jnp.float32), jnp.asarray(kv, jnp.float32)))
        assert np.abs(got - expected).max() <= 1e-5 * scale, name
    for method in TORCH_METHODS:
        got = tops.gate_loop_scan(torch.tensor(a, dtype=torch.float32), torch.tensor(kv, dtype=torch.float32),
                                  method=method).numpy()
        assert np.abs(got - expected).max() <= 1e-5 * scale, method


def test_broadcast_transition_and_other_axis(x64):
    """a of shape (B, T, H, 1, 1) broadcast over a (dk, dv) state; scan along axis 2 of (B, H, T, d)."""
    a, kv, h0 = _inputs(33, complex_=True, shape=(2, None, 3, 2, 4), a_shape=(2, None, 3, 1, 1), h0=True)
    expected = _numpy_loop(a, kv, h0)
    got = JAX_SCANS["associative"](jnp.asarray(a), jnp.asarray(kv), h0=jnp.asarray(h0))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)
    for method in TORCH_METHODS:
        got = tops.gate_loop_scan(torch.from_numpy(a), torch.from_numpy(kv), h0=torch.from_numpy(h0), method=method)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)
    a2, kv2 = np.swapaxes(a, 1, 2)[..., 0, 0], np.swapaxes(kv, 1, 2)[..., 0, 0]
    expected2 = _numpy_loop(a2, kv2, axis=2)
    np.testing.assert_allclose(np.asarray(JAX_SCANS["associative"](jnp.asarray(a2), jnp.asarray(kv2), axis=2)),
                               expected2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tops.gate_loop_scan(torch.from_numpy(a2), torch.from_numpy(kv2), axis=-1).numpy(),
                               expected2, rtol=1e-12, atol=1e-12)


def test_h0_equals_running_in_two_pieces(x64):
    """Scanning [0, s) then [s, T) from the first piece's last state equals one scan, every s."""
    T = 5
    a, kv, _ = _inputs(T, complex_=True)
    scan = JAX_SCANS["associative"]
    whole = np.asarray(scan(jnp.asarray(a), jnp.asarray(kv)))
    for s in range(1, T):
        first = scan(jnp.asarray(a[:, :s]), jnp.asarray(kv[:, :s]))
        second = scan(jnp.asarray(a[:, s:]), jnp.asarray(kv[:, s:]), h0=first[:, -1])
        np.testing.assert_allclose(np.concatenate([np.asarray(first), np.asarray(second)], 1), whole, atol=1e-12)
        tf = tops.gate_loop_scan(torch.from_numpy(a[:, :s]), torch.from_numpy(kv[:, :s]))
        ts = tops.gate_loop_scan(torch.from_numpy(a[:, s:]), torch.from_numpy(kv[:, s:]), h0=tf[:, -1])
        np.testing.assert_allclose(torch.cat([tf, ts], 1).numpy(), whole, atol=1e-12)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_no_nan(dtype):
    """bf16 / fp16 inputs: finite states and gradients, close to float32 (the published log-space
    scan NaNs here); a products underflow to 0 rather than dividing by them."""
    T = 512
    a, kv, _ = _inputs(T, complex_=False, shape=(2, None, 8), seed=5)
    a = a**8  # |a| down to ~0.004: long products underflow in half precision
    ref = _numpy_loop(a, kv)
    scale = np.abs(ref).max()
    jd = jnp.dtype(dtype)
    for name, fn in JAX_SCANS.items():
        ja, jkv = jnp.asarray(a, jd), jnp.asarray(kv, jd)
        h = fn(ja, jkv)
        ga, gk = jax.jit(jax.grad(lambda x, y, f=fn: jnp.sum(f(x, y).astype(jnp.float32)), argnums=(0, 1)))(ja, jkv)
        for arr in (h, ga, gk):
            assert bool(jnp.all(jnp.isfinite(arr.astype(jnp.float32)))), (name, dtype)
        assert np.abs(np.asarray(h.astype(jnp.float32)) - ref).max() <= 3e-2 * scale, (name, dtype)
    td = getattr(torch, dtype)
    for method in TORCH_METHODS:
        ta = torch.tensor(a, dtype=td, requires_grad=True)
        tkv = torch.tensor(kv, dtype=td, requires_grad=True)
        h = tops.gate_loop_scan(ta, tkv, method=method)
        h.float().sum().backward()
        for arr in (h, ta.grad, tkv.grad):
            assert torch.isfinite(arr.float()).all(), (method, dtype)
        assert np.abs(h.float().detach().numpy() - ref).max() <= 3e-2 * scale, (method, dtype)


BAD = [
    (dict(a=(2, 5, 3), kv=(2, 4, 3)), "equal length"),
    (dict(a=(2, 5, 2), kv=(2, 5, 3)), "size 1 in a"),
    (dict(a=(2, 5), kv=(2, 5, 3)), "same (non-zero) rank"),
    (dict(a=(2, 0, 3), kv=(2, 0, 3)), "length >= 1"),
    (dict(a=(2, 5, 3), kv=(2, 5, 3), h0=(2, 4)), "h0 must have kv's shape"),
    (dict(a=(2, 5, 3), kv=(2, 5, 3), axis=3), "out of range"),
]


@pytest.mark.parametrize("case,fragment", BAD, ids=[f for _, f in BAD])
def test_bad_inputs_raise_naming_shapes(case, fragment):
    """Mismatched shapes, zero length, bad h0 or axis: ValueError naming the shapes, both backends."""
    axis = case.get("axis", 1)
    h0 = case.get("h0")
    ja, jkv = jnp.ones(case["a"]), jnp.ones(case["kv"])
    ta, tkv = torch.ones(case["a"]), torch.ones(case["kv"])
    for fn, a, kv, h in (
        (jops.gate_loop_scan, ja, jkv, None if h0 is None else jnp.ones(h0)),
        (jops.gate_loop_scan_chunked, ja, jkv, None if h0 is None else jnp.ones(h0)),
        (tops.gate_loop_scan, ta, tkv, None if h0 is None else torch.ones(h0)),
    ):
        with pytest.raises(ValueError, match=re.escape(fragment)) as info:
            fn(a, kv, axis=axis, h0=h)
        assert str(tuple(case["kv"])) in str(info.value)


def test_mismatched_dtypes_raise():
    """a and kv of different dtypes (float32 vs complex64, float32 vs float16): ValueError."""
    with pytest.raises(ValueError, match=r"same dtype.*\(2, 3, 4\)"):
        jops.gate_loop_scan(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4), jnp.complex64))
    with pytest.raises(ValueError, match=r"same dtype.*\(2, 3, 4\)"):
        tops.gate_loop_scan(torch.ones(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="method"):
        tops.gate_loop_scan(torch.ones(2, 3, 4), torch.ones(2, 3, 4), method="magic")
    with pytest.raises(ValueError, match="chunk"):
        jops.gate_loop_scan_chunked(jnp.ones((2, 3, 4)), jnp.ones((2, 3, 4)), chunk=0)
