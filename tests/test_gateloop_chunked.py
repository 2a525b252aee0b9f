"""The chunked matmul GateLoop operator (gateloop_scan="chunked_matmul"), both backends.

References are independent of the code under test: a NumPy loop over positions with an explicit
(dk x dv) state (values), autograd through lax.scan's operator (JAX gradients) and through a
torch loop over positions (torch gradients).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_core.config import ModelConfig
from physnets_jax.layers.gateloop import gate_loop_operator
from physnets_jax.ops.gate_loop import gate_loop_scan_sequential
from physnets_jax.ops.gate_loop_chunked import gate_loop_chunked_matmul as jchunked
from physnets_torch.ops.gate_loop_chunked import gate_loop_chunked_matmul as tchunked


def _inputs(T, *, complex_, B=2, H=2, dk=3, dv=4, seed=0, gate_scale=None):
    """q, k, v, a, h0, w (float64 / complex128 NumPy); real gates include negative ones."""
    rng = np.random.default_rng(seed)
    q, k = rng.normal(size=(2, B, T, H, dk))
    v, w = rng.normal(size=(2, B, T, H, dv))
    mag = 1 / (1 + np.exp(-np.abs(rng.normal(size=(B, T, H))))) if gate_scale is None else np.full((B, T, H), gate_scale)
    if complex_:
        a = mag * np.exp(1j * rng.uniform(-np.pi, np.pi, (B, T, H)))
        h0 = rng.normal(size=(B, H, dk, dv)) + 1j * rng.normal(size=(B, H, dk, dv))
    else:
        a = mag * np.where(rng.uniform(size=(B, T, H)) < 0.3, -1.0, 1.0)
        h0 = rng.normal(size=(B, H, dk, dv))
    return q, k, v, a, h0, w


def _numpy_operator(q, k, v, a, h0=None):
    """o_t = q_t^T Re S_t, S_t = a_t S_{t-1} + k_t v_t^T, by a loop; returns (o, S_T)."""
    B, T, H, dk = q.shape
    S = np.zeros((B, H, dk, v.shape[-1]), complex) if h0 is None else h0.astype(complex)
    out = np.zeros(v.shape)
    for t in range(T):
        S = a[:, t, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out[:, t] = np.einsum("bhd,bhde->bhe", q[:, t], S.real)
    return out, S


def _torch_loop_operator(q, k, v, a, h0):
    S = h0
    outs = []
    for t in range(q.shape[1]):
        S = a[:, t, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhd,bhde->bhe", q[:, t], S.real if S.is_complex() else S))
    return torch.stack(outs, 1), S


@pytest.mark.parametrize("complex_", [False, True], ids=["real", "complex"])
def test_chunked_matches_loop_float64(x64, complex_):
    """Outputs and last state equal the loop (with h0; ragged last chunk, T < chunk, T = 1) in
    both backends; gradients w.r.t. q, k, v, a, h0 equal the sequential operator's (JAX) and a
    torch loop's, to 1e-10."""
    q, k, v, a, h0, w = _inputs(13, complex_=complex_)
    for T, chunk in ((13, 4), (13, 64), (1, 4)):
        args = tuple(x[:, :T] for x in (q, k, v, a)) + (h0,)
        want_o, want_S = _numpy_operator(*args)
        jo, jS = jchunked(*map(jnp.asarray, args), chunk=chunk)
        to, tS = tchunked(*map(torch.from_numpy, args), chunk=chunk)
        for got_o, got_S in ((np.asarray(jo), np.asarray(jS)), (to.numpy(), tS.numpy())):
            np.testing.assert_allclose(got_o, want_o, rtol=1e-10, atol=1e-10, err_msg=f"T={T} chunk={chunk}")
            np.testing.assert_allclose(got_S, want_S, rtol=1e-10, atol=1e-10, err_msg=f"T={T} chunk={chunk}")

    jw = jnp.asarray(w)

    def jloss(fn):
        def loss(q_, k_, v_, a_, h0_):
            o, S = fn(q_, k_, v_, a_, h0_)
            return jnp.sum(jw * o) + jnp.sum(jnp.real(S) ** 2)  # the state's gradient path too
        return loss

    args = [jnp.asarray(x) for x in (q, k, v, a, h0)]
    want = jax.grad(jloss(lambda *xs: gate_loop_operator(*xs, scan=gate_loop_scan_sequential)),
                    argnums=tuple(range(5)))(*args)
    got = jax.jit(jax.grad(jloss(lambda *xs: jchunked(*xs, chunk=4)), argnums=tuple(range(5))))(*args)
    for name, g, r in zip("q k v a h0".split(), got, want, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-10, err_msg=f"jax grad {name}")

    def tgrads(fn):
        ts = [torch.from_numpy(x.copy()).requires_grad_() for x in (q, k, v, a, h0)]
        o, S = fn(*ts)
        ((torch.from_numpy(w) * o).sum() + (S.real if S.is_complex() else S).square().sum()).backward()
        return [t.grad.numpy() for t in ts]

    want_t = tgrads(_torch_loop_operator)
    got_t = tgrads(lambda *xs: tchunked(*xs, chunk=4))
    for name, g, r in zip("q k v a h0".split(), got_t, want_t, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10, err_msg=f"torch grad {name}")


def test_chunked_safe_with_tiny_and_zero_gates():
    """float32, chunk 64: gates of modulus 1e-3 (a chunk's product is 1e-192: a ratio of running
    products would overflow) and exact zeros give finite values and gradients close to the
    float64 loop."""
    for complex_ in (False, True):
        q, k, v, a, _, w = _inputs(100, complex_=complex_, B=1, gate_scale=1e-3, seed=2)
        a[:, 10] = 0.0
        want_o, want_S = _numpy_operator(q, k, v, a)
        f32 = (np.float32, np.float32, np.float32, np.complex64 if complex_ else np.float32)
        args = [x.astype(t) for x, t in zip((q, k, v, a), f32, strict=True)]
        def jloss(*xs, w=w):
            o, S = jchunked(*xs, chunk=64)
            return jnp.sum(jnp.asarray(w, jnp.float32) * o), (o, S)

        (_, (jo, jS)), grads = jax.jit(jax.value_and_grad(jloss, argnums=(0, 1, 2, 3), has_aux=True))(
            *map(jnp.asarray, args))
        ts = [torch.from_numpy(x).requires_grad_() for x in args]
        to, tS = tchunked(*ts, chunk=64)
        (torch.from_numpy(w.astype(np.float32)) * to).sum().backward()
        for got_o, got_S in ((np.asarray(jo), np.asarray(jS)), (to.detach().numpy(), tS.detach().numpy())):
            np.testing.assert_allclose(got_o, want_o, rtol=1e-5, atol=1e-5 * np.abs(want_o).max())
            np.testing.assert_allclose(got_S, want_S, rtol=1e-5, atol=1e-5 * np.abs(want_S).max())
        for g in [*grads, *(t.grad for t in ts)]:
            assert np.isfinite(np.asarray(g)).all(), complex_


def test_chunked_memory_linear_in_T_and_below_the_state_scan():
    """Compiled forward+backward temporaries (XLA's memory analysis) at head dim 16: x4 positions
    cost ~x4 memory (linear in T), and less than half of what the elementwise scan over the
    (T, dk, dv) states needs."""
    H, d = 2, 16

    def temp_bytes(T, op):
        q = jax.ShapeDtypeStruct((1, T, H, d), jnp.float32)
        a = jax.ShapeDtypeStruct((1, T, H), jnp.complex64)
        grad = jax.grad(lambda *xs: jnp.sum(op(*xs)[0] ** 2), argnums=(0, 1, 2, 3))
        mem = jax.jit(grad).lower(q, q, q, a).compile().memory_analysis()
        if mem is None:
            pytest.skip("this backend reports no memory analysis")
        return mem.temp_size_in_bytes

    chunked = lambda *xs: jchunked(*xs, chunk=64)  # noqa: E731
    small, large = temp_bytes(512, chunked), temp_bytes(2048, chunked)
    assert 3.0 <= large / small <= 5.0, (small, large)
    state_scan = temp_bytes(2048, lambda *xs: gate_loop_operator(*xs, scan=gate_loop_scan_sequential))
    assert large < 0.5 * state_scan, (large, state_scan)


BAD = [
    (dict(chunk=0), "chunk=0 must be a positive integer"),
    (dict(chunk=True), "chunk=True must be a positive integer"),
    (dict(chunk=2.5), "chunk=2.5 must be a positive integer"),
    (dict(k=(2, 5, 3, 4)), "q and k must have the same shape"),
    (dict(v=(2, 4, 3, 4)), "must share (B, T, H)"),
    (dict(a=(2, 5, 2)), "must share (B, T, H)"),
    (dict(a=(2, 5, 3, 1)), "a (B, T, H)"),
    (dict(h0=(2, 3, 3, 4)), "h0 must have shape (B, H, dk, dv) = (2, 3, 3, 5)"),
]


@pytest.mark.parametrize("case,fragment", BAD, ids=[f for _, f in BAD])
def test_chunked_bad_inputs_raise(case, fragment):
    """Bad chunk length or shapes: ValueError naming the argument and the shapes, both backends."""
    shapes = dict(q=(2, 5, 3, 3), k=(2, 5, 3, 3), v=(2, 5, 3, 5), a=(2, 5, 3), h0=None)
    shapes.update({key: val for key, val in case.items() if key != "chunk"})
    chunk = case.get("chunk", 4)
    for fn, ones in ((jchunked, jnp.ones), (tchunked, torch.ones)):
        arrays = {key: None if s is None else ones(s) for key, s in shapes.items()}
        with pytest.raises(ValueError, match=re.escape(fragment)):
            fn(arrays["q"], arrays["k"], arrays["v"], arrays["a"], arrays["h0"], chunk=chunk)


def test_config_chunk_size_and_scan_choice():
    """gateloop.chunk_size must be a positive integer and gateloop.scan a known choice: the
    ValueError names the field (nested or flat spelling alike)."""
    for bad, rule in ((0, "must be a positive integer"), (-4, "must be a positive integer"),
                      (2.0, "must be an integer"), (True, "must be an integer")):
        for spelling in ({"gateloop": {"chunk_size": bad}}, {"gateloop_chunk_size": bad}):
            with pytest.raises(ValueError, match=re.escape(f"gateloop.chunk_size={bad!r} {rule}")):
                ModelConfig.from_dict(spelling)
    with pytest.raises(ValueError, match="gateloop.scan='chunked-matmul' is not known; valid choices: .*chunked_matmul"):
        ModelConfig.from_dict({"gateloop": {"scan": "chunked-matmul"}})
    cfg = ModelConfig.from_dict({"gateloop_scan": "chunked_matmul", "gateloop_chunk_size": 16})
    assert (cfg.gateloop.scan, cfg.gateloop.chunk_size) == ("chunked_matmul", 16)
