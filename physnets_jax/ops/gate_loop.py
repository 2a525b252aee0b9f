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
- gate_loop_scan_sequential: the plain lax.scan reference (tests compare against it).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from physnets_core.checks import check_gate_loop_args


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
    """Reference: the same states by a plain jax.lax.scan over `axis`, one step per position."""
    a, kv, axis = _prepare(a, kv, axis, h0)
    a_T = jnp.moveaxis(a, axis, 0)
    kv_T = jnp.moveaxis(kv, axis, 0)

    def step(h, a_kv):
        a_t, kv_t = a_kv
        h = a_t * h + kv_t
        return h, h

    _, h_T = jax.lax.scan(step, jnp.zeros_like(kv_T[0]), (a_T, kv_T))
    return jnp.moveaxis(h_T, 0, axis)


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
