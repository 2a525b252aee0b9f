"""The log-space (Heinsen) GateLoop scan, gateloop_scan="heinsen", in both backends.

References are independent of the code under test: a NumPy loop over positions (values) and the
NumPy reverse recurrence (gradients). The second half
measures where the log-space scan loses precision (docs/gateloop.md, "Heinsen scan: limits").
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax.ops import gate_loop as jops
from physnets_torch.ops import gate_loop as tops

JAX_HEINSEN = jax.jit(jops.gate_loop_scan_heinsen, static_argnames="axis")
EPS32 = float(np.finfo(np.float32).eps)


def _inputs(T, *, complex_, shape=(2, None, 3), a_shape=None, seed=0, logit_shift=0.0):
    """a = sigmoid(N(shift, 1)) (times a random phase if complex), kv, h0 and a loss weight w."""
    rng = np.random.default_rng(seed)
    shape = tuple(T if s is None else s for s in shape)
    a_shape = shape if a_shape is None else tuple(T if s is None else s for s in a_shape)
    a = 1 / (1 + np.exp(-(rng.normal(size=a_shape) + logit_shift)))
    kv, w = rng.normal(size=shape), rng.normal(size=shape)
    h0 = rng.normal(size=shape[:1] + shape[2:])
    if complex_:
        a = a * np.exp(1j * rng.uniform(-np.pi, np.pi, a_shape))
        kv, w, h0 = (x + 1j * rng.normal(size=x.shape) for x in (kv, w, h0))
    return a, kv, h0, w


def _numpy_loop(a, kv, h0=None):
    a = np.broadcast_to(a, kv.shape)
    h = np.zeros_like(kv[:, 0]) if h0 is None else h0
    out = []
    for t in range(kv.shape[1]):
        h = a[:, t] * h + kv[:, t]
        out.append(h)
    return np.stack(out, 1)


def _numpy_grads(a, kv, h0, w):
    """Gradients of L = Re sum(w h) in JAX's convention (torch's is the conjugate) w.r.t. a, kv,
    h0, by the reverse recurrence G_t = w_t + a_{t+1} G_{t+1}: dkv_t = G_t, da_t = G_t h_{t-1}
    (summed over the axes a is broadcast on), dh0 = G_0 a_0."""
    a_full = np.broadcast_to(a, kv.shape)
    h = _numpy_loop(a, kv, h0)
    G = np.zeros_like(kv)
    nxt = np.zeros_like(kv[:, 0])
    for t in range(kv.shape[1] - 1, -1, -1):
        nxt = w[:, t] + (a_full[:, t + 1] * nxt if t + 1 < kv.shape[1] else 0)
        G[:, t] = nxt
    h_prev = np.concatenate([h0[:, None], h[:, :-1]], 1)
    ga = G * h_prev
    ga = ga.sum(axis=tuple(d for d in range(ga.ndim) if a.shape[d] == 1 and ga.shape[d] != 1), keepdims=True)
    return ga, G, G[:, 0] * a_full[:, 0]


def _rel(x, ref):
    return float(np.abs(np.asarray(x, np.complex128) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_heinsen_matches_loop_float64(x64, complex_):
    """States and gradients w.r.t. a, kv, h0 (with h0, a broadcast over a (dk, dv) state) equal the
    loop in float64, both backends; float64 stays complex128 (the reference computes every dtype
    in complex64, ~6e-8 relative)."""
    T = 33
    a, kv, h0, w = _inputs(T, complex_=complex_, shape=(1, None, 2, 2, 3), a_shape=(1, None, 2, 1, 1))
    expected = _numpy_loop(a, kv, h0)
    want = _numpy_grads(a, kv, h0, w)
    jw = jnp.asarray(w)

    def jloss(a_, kv_, h0_):
        h = jops.gate_loop_scan_heinsen(a_, kv_, h0=h0_)
        return jnp.sum(jnp.real(jw * h)), h

    (_, got_j), grads_j = jax.jit(jax.value_and_grad(jloss, argnums=(0, 1, 2), has_aux=True))(
        jnp.asarray(a), jnp.asarray(kv), jnp.asarray(h0))
    ts = [torch.from_numpy(x.copy()).requires_grad_() for x in (a, kv, h0)]
    got_t = tops.gate_loop_scan_heinsen(ts[0], ts[1], h0=ts[2])
    (torch.from_numpy(w) * got_t).real.sum().backward() if complex_ else (torch.from_numpy(w) * got_t).sum().backward()
    assert got_j.dtype == kv.dtype and got_t.dtype == ts[1].dtype
    # |A_T| = |sum log a| <= 33 log 2 here: rounding ~ 1e-16 |A_T| (see the limits below)
    np.testing.assert_allclose(np.asarray(got_j), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_t.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    for name, w_, g_j, t in zip(("a", "kv", "h0"), want, grads_j, ts, strict=True):
        np.testing.assert_allclose(np.asarray(g_j), w_, rtol=1e-10, atol=1e-10, err_msg=f"jax grad {name}")
        np.testing.assert_allclose(t.grad.numpy(), np.conj(w_), rtol=1e-10, atol=1e-10, err_msg=f"torch grad {name}")


def test_heinsen_negative_real_gates_and_length_one(x64):
    """Negative real gates (ablate_complex) go through the complex log (angle pi); T = 1."""
    a, kv, h0, _ = _inputs(9, complex_=False)
    a = a * np.where(np.arange(9) % 3 == 0, -1.0, 1.0)[None, :, None]
    for T in (1, 9):
        expected = _numpy_loop(a[:, :T], kv[:, :T], h0)
        got = JAX_HEINSEN(jnp.asarray(a[:, :T]), jnp.asarray(kv[:, :T]), h0=jnp.asarray(h0))
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-12, atol=1e-12)
        got = tops.gate_loop_scan_heinsen(torch.from_numpy(a[:, :T]), torch.from_numpy(kv[:, :T]),
                                          h0=torch.from_numpy(h0))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12)


# ---- limits ----------------------------------------------------------------------------------


def test_heinsen_float32_error_grows_with_log_gate_sum():
    """float32: the relative error of the states and of the kv and a gradients grows like
    eps |A_T|, A_T = sum log a (log h_t is a sum of terms of that size), while the sequential scan
    stays at ~1e-7. At |A_T| ~ 1,100 (512 positions, a = sigmoid(N(-2, 1))): Heinsen ~5e-5 relative
    (bound 2 eps |A_T| = 2.6e-4), sequential < 1e-6."""
    T = 512
    a, kv, h0, w = _inputs(T, complex_=False, shape=(1, None, 2), seed=1, logit_shift=-2.0)
    h0 = np.zeros_like(h0)
    A = float(np.abs(np.log(a).sum(1)).max())
    assert A > 1000
    expected = _numpy_loop(a, kv)
    want_ga, want_gkv, _ = _numpy_grads(a, kv, h0, w)
    w32 = jnp.asarray(w, jnp.float32)
    errors = {}
    for name, fn in (("heinsen", jops.gate_loop_scan_heinsen), ("sequential", jops.gate_loop_scan_sequential)):
        a32, k32 = jnp.asarray(a, jnp.float32), jnp.asarray(kv, jnp.float32)

        def loss(x, y, f=fn):
            h = f(x, y)
            return jnp.sum(w32 * h), h

        (_, h), (ga, gk) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(a32, k32)
        errors[name] = (_rel(h, expected), _rel(gk, want_gkv), _rel(ga, want_ga))
    ta = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    tk = torch.tensor(kv, dtype=torch.float32, requires_grad=True)
    h = tops.gate_loop_scan_heinsen(ta, tk)
    (h * torch.tensor(w, dtype=torch.float32)).sum().backward()
    errors["torch heinsen"] = (_rel(h.detach().numpy(), expected), _rel(tk.grad.numpy(), want_gkv),
                               _rel(ta.grad.numpy(), want_ga))
    assert max(errors["sequential"]) < 1e-6, errors
    for name in ("heinsen", "torch heinsen"):
        assert max(errors[name]) <= 2 * EPS32 * A, (name, errors, A)
        assert errors[name][0] > 30 * errors["sequential"][0], (name, errors)  # the loss is real


def test_heinsen_no_nan_where_the_reference_nans():
    """Two regimes where gateloop-transformer 0.2.5's heinsen_associative_scan NaNs: leading
    exact zeros in kv (its log 0 = -inf gives NaN gradients w.r.t. a, zero ones w.r.t. kv), and
    float16 inputs once |sum log a| passes 65,504 (its float16 cumsum overflows). Here: finite,
    kv gradients exact (straight through the 1e-20 floor), states close to the loop."""
    a = np.array([[0.5, 0.5, 0.7, 0.6]])
    kv = np.array([[0.0, 0.0, 2.0, 1.0]])
    # d/dkv_s sum_t h_t = sum_{t>=s} prod_{s<r<=t} a_r; d/da_t sum h = h_{t-1} (1 + a_{t+1} + ...)
    want_gkv = np.array([[1 + 0.5 + 0.35 + 0.21, 1 + 0.7 + 0.42, 1 + 0.6, 1.0]])
    want_ga = np.array([[0.0, 0.0, 0.0, 2.0]])
    ga, gk = jax.grad(lambda x, y: jnp.sum(JAX_HEINSEN(x, y)), argnums=(0, 1))(jnp.asarray(a), jnp.asarray(kv))
    ta, tk = torch.tensor(a, requires_grad=True), torch.tensor(kv, requires_grad=True)
    tops.gate_loop_scan_heinsen(ta, tk).sum().backward()
    for g_a, g_kv in ((np.asarray(ga), np.asarray(gk)), (ta.grad.numpy(), tk.grad.numpy())):
        np.testing.assert_allclose(g_kv, want_gkv, rtol=1e-5)  # float32 (x64 off)
        np.testing.assert_allclose(g_a, want_ga, atol=1e-6)

    T = 4096  # a = 6e-8 (float16's smallest subnormal): |sum log a| = 16.6 T = 68,000 > 65,504
    rng = np.random.default_rng(0)
    a16 = np.full((1, T, 2), 6e-8)
    kv16 = rng.normal(size=(1, T, 2))
    expected = _numpy_loop(a16.astype(np.float16).astype(np.float64), kv16.astype(np.float16).astype(np.float64))
    got_j = JAX_HEINSEN(jnp.asarray(a16, jnp.float16), jnp.asarray(kv16, jnp.float16))
    got_t = tops.gate_loop_scan_heinsen(torch.tensor(a16, dtype=torch.float16), torch.tensor(kv16, dtype=torch.float16))
    assert got_j.dtype == jnp.float16 and got_t.dtype == torch.float16
    for got in (np.asarray(got_j, np.float64), got_t.double().numpy()):
        assert np.isfinite(got).all()
        assert _rel(got, expected) < 2 * EPS32 * 68_000 + 1e-3  # log-space error + float16 rounding
