"""The GateLoop linear recurrence h_t = a_t * h_{t-1} + kv_t along one axis (real or complex).

Katsch 2023 ("GateLoop"): with the associative operator

    (a_i, x_i) o (a_j, x_j) = (a_j * a_i, a_j * x_i + x_j)        (i earlier than j)

the prefix "sums" of (a_t, kv_t) are (prod_{s<=t} a_s, h_t), so the recurrence runs in
O(log T) depth with `jax.lax.associative_scan`. An optional initial state h0 (the decoding cache)
is folded into the first element: kv_0 <- a_0 * h0 + kv_0, so h_{-1} = h0.

Functions (all jit-able, no host sync; shapes: `a` and `kv` of equal rank, the scan axis of equal
length, every other axis of `a` equal to kv's or 1, i.e. `a` may broadcast over kv's trailing
axes, as the per-head transition of GateLoopedAttention does over its (d_k, d_v) state):

- gate_loop_scan: jax.lax.associative_scan (the default used by the layers).
- gate_loop_scan_chunked: chunks of `chunk` steps; a plain lax.scan inside the chunks runs
  vectorised over all chunks at once, then a lax.scan over the chunk states; O(T) work and
  chunk + T/chunk sequential steps. Benchmarked against the associative scan in
  benchmarks/gateloop_scan.py (docs/gateloop.md has the table).
- gate_loop_scan_sequential: a plain lax.scan, one step per position, with a hand-written backward
  (the reverse recurrence); the CPU default. Tests compare every scan with an autodiff lax.scan.
- gate_loop_scan_heinsen: the log-space scan of the reference package's `use_heinsen=True`
  (Heinsen 2023): h = exp(A + logcumsumexp(log kv - A)), A = cumsum(log a). Loses precision as
  |A| grows (relative error ~ eps * |A|, worse in the gradient w.r.t. a); docs/gateloop.md says where.

The chunked matmul form of the whole operator (o_t = q_t^T Re S_t for head dim > 1) lives in
physnets_jax/ops/gate_loop_chunked.py.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from physnets_core.checks import HEINSEN_EPS, check_gate_loop_args


def _prepare(a, kv, axis, h0):
    a, kv = jnp.asarray(a), jnp.asarray(kv)
    axis = check_gate_loop_args(
        a.shape, kv.shape, a.dtype, kv.dtype, axis, None if h0 is None else jnp.shape(h0)
    )
    if h0 is not None:
        h0 = jnp.asarray(h0, kv.dtype)
        first_a = jax.lax.index_in_dim(a, 0, axis, keepdims=True)
        first_kv = jax.lax.index_in_dim(kv, 0, axis, keepdims=True)
        first = first_a * jnp.expand_dims(h0, axis) + first_kv
        kv = jax.lax.dynamic_update_index_in_dim(kv, first, 0, axis)
    return a, kv, axis


def _combine(earlier, later):
    """(a_i, x_i) o (a_j, x_j) = (a_j a_i, a_j x_i + x_j), i earlier than j."""
    a_i, x_i = earlier
    a_j, x_j = later
    return a_j * a_i, a_j * x_i + x_j


# Each public scan is jitted: one compilation per shape even when called eagerly (eager JAX would
# compile every slice/pad primitive of the associative scan separately), inlined under an outer jit.
@partial(jax.jit, static_argnames="axis")
def gate_loop_scan(a: jax.Array, kv: jax.Array, *, axis: int = 1, h0: jax.Array | None = None) -> jax.Array:
    """States h (kv's shape) of h_t = a_t h_{t-1} + kv_t along `axis`, h_{-1} = h0 (default 0),
    by jax.lax.associative_scan."""
    a, kv, axis = _prepare(a, kv, axis, h0)
    _, h = jax.lax.associative_scan(_combine, (a, kv), axis=axis)
    return h


@partial(jax.jit, static_argnames="axis")
def gate_loop_scan_sequential(
    a: jax.Array, kv: jax.Array, *, axis: int = 1, h0: jax.Array | None = None
) -> jax.Array:
    """The same states by a jax.lax.scan over `axis`, one step per position; its gradient is the
    reverse recurrence (_sequential_recurrence), not XLA's autodiff of the scan."""
    a, kv, axis = _prepare(a, kv, axis, h0)
    h_T = _sequential_recurrence(jnp.moveaxis(a, axis, 0), jnp.moveaxis(kv, axis, 0))
    return jnp.moveaxis(h_T, 0, axis)


def _scan_states(a_T, kv_T):
    """h_t = a_t h_{t-1} + kv_t over the leading axis by jax.lax.scan, h_{-1} = 0: kv_T's shape."""

    def step(h, a_kv):
        a_t, kv_t = a_kv
        h = a_t * h + kv_t
        return h, h

    return jax.lax.scan(step, jnp.zeros_like(kv_T[0]), (a_T, kv_T))[1]


@jax.custom_vjp
def _sequential_recurrence(a_T, kv_T):
    """_scan_states with a hand-written backward pass: the cotangent of a linear recurrence is the
    same recurrence run backwards, lam_t = g_t + a_{t+1} lam_{t+1}; then d kv_t = lam_t and
    d a_t = lam_t h_{t-1} (summed over the axes a broadcasts along). XLA's autodiff of the scan
    stacked a_t and h_{t-1} per position with a dynamic-update-slice each, the larger part of a
    GateLoop step's per-position ops on CPU."""
    return _scan_states(a_T, kv_T)


def _sequential_recurrence_fwd(a_T, kv_T):
    h_T = _scan_states(a_T, kv_T)
    return h_T, (a_T, h_T)


def _sequential_recurrence_bwd(residuals, g_T):
    a_T, h_T = residuals
    a_next = jnp.concatenate([a_T[1:], jnp.zeros_like(a_T[:1])], axis=0)
    lam_T = _scan_states(a_next[::-1], g_T[::-1])[::-1]
    h_prev = jnp.concatenate([jnp.zeros_like(h_T[:1]), h_T[:-1]], axis=0)
    broadcast_axes = tuple(d for d in range(a_T.ndim) if a_T.shape[d] == 1 and h_T.shape[d] != 1)
    da_T = jnp.sum(lam_T * h_prev, axis=broadcast_axes, keepdims=True)
    return da_T.astype(a_T.dtype), lam_T


_sequential_recurrence.defvjp(_sequential_recurrence_fwd, _sequential_recurrence_bwd)


@partial(jax.jit, static_argnames=("axis", "chunk"))
def gate_loop_scan_chunked(
    a: jax.Array, kv: jax.Array, *, axis: int = 1, h0: jax.Array | None = None, chunk: int = 64
) -> jax.Array:
    """Same states, chunked: a lax.scan over the `chunk` positions of every chunk at once
    (vectorised over chunks), then a lax.scan over the T/chunk chunk states; O(T) work."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk={chunk!r} must be a positive integer")
    a, kv, axis = _prepare(a, kv, axis, h0)
    T = kv.shape[axis]
    chunk = min(chunk, T)
    n_chunks = -(-T // chunk)
    pad = n_chunks * chunk - T
    a_T = jnp.moveaxis(a, axis, 0)
    kv_T = jnp.moveaxis(kv, axis, 0)
    if pad:
        # Padding goes after the last position, so it cannot change any real state.
        a_T = jnp.concatenate([a_T, jnp.zeros((pad,) + a_T.shape[1:], a_T.dtype)])
        kv_T = jnp.concatenate([kv_T, jnp.zeros((pad,) + kv_T.shape[1:], kv_T.dtype)])
    # (n_chunks * chunk, ...) -> (chunk, n_chunks, ...): scan position-in-chunk, vectorise chunks.
    a_CxN = jnp.swapaxes(a_T.reshape((n_chunks, chunk) + a_T.shape[1:]), 0, 1)
    kv_CxN = jnp.swapaxes(kv_T.reshape((n_chunks, chunk) + kv_T.shape[1:]), 0, 1)

    def inner(carry, a_kv):
        prod, h = carry
        a_t, kv_t = a_kv
        prod, h = a_t * prod, a_t * h + kv_t
        return (prod, h), (prod, h)

    init = (jnp.ones_like(a_CxN[0]), jnp.zeros_like(kv_CxN[0]))
    (prod_N, last_N), (prod_CxN, h_CxN) = jax.lax.scan(inner, init, (a_CxN, kv_CxN))

    def outer(h_before, p_e):
        p, e = p_e
        return p * h_before + e, h_before

    _, before_N = jax.lax.scan(outer, jnp.zeros_like(last_N[0]), (prod_N, last_N))
    h_CxN = h_CxN + prod_CxN * before_N[None]
    h_T = jnp.swapaxes(h_CxN, 0, 1).reshape((n_chunks * chunk,) + kv_T.shape[1:])[:T]
    return jnp.moveaxis(h_T, 0, axis)


def _heinsen_log(x, cdtype, *, pass_gradient: bool):
    """log x as a complex number (negative reals get angle pi), with |x| < HEINSEN_EPS replaced by
    HEINSEN_EPS (keeping the sign of a real x), so that no log 0 = -inf reaches the backward.
    pass_gradient: the replaced entries still get the gradient of x (straight through), else none."""
    eps = HEINSEN_EPS
    small = jnp.abs(x) < eps
    if jnp.iscomplexobj(x):
        fill = jnp.asarray(eps, x.dtype)
    else:
        fill = jnp.where(x < 0, -eps, eps).astype(x.dtype)
    if pass_gradient:
        safe = x + jax.lax.stop_gradient(jnp.where(small, fill - x, jnp.zeros_like(x)))
    else:
        safe = jnp.where(small, fill, x)
    return jnp.log(safe.astype(cdtype))


def _exp_logcumsumexp(x, axis: int, scan):
    """exp(logcumsumexp(x)) along axis for complex x, as exp(m_t) S_t: m_t = max_{s<=t} Re x_s and
    S_t = exp(m_{t-1} - m_t) S_{t-1} + exp(x_t - m_t), a linear recurrence whose gate and input
    are <= 1 in modulus (the online-softmax rescaling), run by `scan`; m cancels, so it carries no
    gradient. Returns (m, S)."""
    m = jax.lax.stop_gradient(jax.lax.cummax(x.real, axis=axis))
    first = jax.lax.index_in_dim(m, 0, axis, keepdims=True)
    m_prev = jnp.concatenate([first, jax.lax.slice_in_dim(m, 0, m.shape[axis] - 1, axis=axis)], axis=axis)
    gate = jnp.exp(m_prev - m).astype(x.dtype)
    return m, scan(gate, jnp.exp(x - m), axis=axis)


@partial(jax.jit, static_argnames="axis")
def gate_loop_scan_heinsen(
    a: jax.Array, kv: jax.Array, *, axis: int = 1, h0: jax.Array | None = None
) -> jax.Array:
    """Same states in log space (Heinsen 2023; the reference's `use_heinsen=True`):
    h_t = exp(A_t + log sum_{s<=t} exp(log kv_s - A_s)), A_t = sum_{s<=t} log a_s, with the
    log-cumsum-exp as exp(m_t) S_t (_exp_logcumsumexp: running max and a rescaled linear scan,
    the associative scan here; no log of the sum, so a state that cancels to 0 is no NaN).

    Computed in complex128 for float64 inputs and complex64 otherwise (half precision goes up to
    float32: the reference's float16 cumsum of log a overflows and NaNs). |a| and |kv| below
    HEINSEN_EPS = 1e-20 are raised to it (a gate that small gets no gradient; kv keeps its gradient,
    where the reference's log 0 gives a zero kv gradient and NaN a gradients). log h_t is a sum of
    terms as large as |A_t|, so the relative error of h_t is ~ eps(dtype) * |A_t|, and the gradient
    w.r.t. a is worse (docs/gateloop.md measures both).
    """
    a, kv, axis = _prepare(a, kv, axis, h0)
    cdtype = jnp.complex128 if jnp.finfo(a.real.dtype).bits == 64 else jnp.complex64
    log_a = _heinsen_log(a, cdtype, pass_gradient=False)
    log_kv = _heinsen_log(kv, cdtype, pass_gradient=True)
    a_star = jnp.cumsum(log_a, axis=axis)
    x = log_kv - a_star
    m, S = _exp_logcumsumexp(x, axis, gate_loop_scan)
    h = jnp.exp(a_star + m) * S
    return (h if jnp.iscomplexobj(kv) else h.real).astype(kv.dtype)
