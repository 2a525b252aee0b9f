"""The GateLoop operator in chunked matmul form (head dim > 1; the GLA / RetNet chunk form).

Per batch b and head h, with a scalar gate a_t (real or complex) and real q_t, k_t (dk), v_t (dv):

    S_t = a_t S_{t-1} + k_t v_t^T   (S_{-1} = h0, default 0),      o_t = q_t^T Re(S_t)

Cut the sequence into chunks of C positions. For t, s in one chunk starting at c (s <= t), with
L_t = sum_{c<=r<=t} log|a_r| and phi_t = sum_{c<=r<=t} angle(a_r) (a real gate's angle is 0 or pi):

    prod_{s<r<=t} a_r = exp(L_t - L_s) e^{i (phi_t - phi_s)}

    o_t = sum_{s<=t} exp(L_t - L_s) [ cos(phi_t) cos(phi_s) + sin(phi_t) sin(phi_s) ] (q_t . k_s) v_s  (intra)
        + exp(L_t) Re( e^{i phi_t} q_t^T S_c )                                                          (inter)

with S_c the state entering the chunk. The intra part is two masked (C x C) matmuls per chunk; the
chunk's own contribution U = sum_s exp(L_end - L_s) e^{i (phi_end - phi_s)} k_s v_s^T and its total
gate g = exp(L_end) e^{i phi_end} feed a scan over the T / C chunk states (dk x dv each), so memory
is linear in T: O(T C) for the intra matrices plus O(T / C * dk * dv) for the states.

Numerical safety: every magnitude is exp of a difference of log-sums inside one chunk, i.e. an actual
product of at most C gates (<= 1 for |a| <= 1), never the ratio of two running products (which
under/overflows); the angles enter only through unit-modulus cos/sin factors. |a| below the dtype's
smallest normal number counts as that number (such a gate gets no gradient).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from physnets_core.checks import check_chunked_args
from physnets_jax.ops.gate_loop import gate_loop_scan_sequential


def _blocks(x, B, N, C, H):
    """(B, N*C, H, ...) -> (B, H, N, C, ...)."""
    x = x.reshape((B, N, C, H) + x.shape[3:])
    return jnp.moveaxis(x, 3, 1)


@partial(jax.jit, static_argnames="chunk")
def gate_loop_chunked_matmul(q, k, v, a, h0=None, *, chunk: int = 64):
    """o (B, T, H, dv) in q's dtype and the last state S_T (B, H, dk, dv) in a's dtype, from
    q, k (B, T, H, dk), v (B, T, H, dv), a (B, T, H) real or complex, h0 (B, H, dk, dv) or None."""
    check_chunked_args(q.shape, k.shape, v.shape, a.shape, None if h0 is None else h0.shape, chunk)
    complex_ = jnp.iscomplexobj(a)
    rdtype = a.real.dtype if complex_ else jnp.result_type(q.dtype, a.dtype, jnp.float32)
    sdtype = a.dtype if complex_ else rdtype  # dtype of the (dk, dv) states
    out_dtype = q.dtype
    B, T, H, dk = q.shape
    C = min(chunk, T)
    N = -(-T // C)
    pad = N * C - T
    q, k, v = (x.astype(rdtype) for x in (q, k, v))
    a = a.astype(sdtype)
    if pad:  # padded positions: a = 1, k = v = q = 0, so they leave the state unchanged
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        q, k, v = (jnp.pad(x, widths) for x in (q, k, v))
        a = jnp.pad(a, widths[:3], constant_values=1)
    q_c, k_c, v_c = (_blocks(x, B, N, C, H) for x in (q, k, v))  # (B, H, N, C, d)
    a_c = _blocks(a, B, N, C, H)  # (B, H, N, C)

    tiny = jnp.finfo(rdtype).tiny
    if complex_:
        a_safe = jnp.where(jnp.abs(a_c) < tiny, jnp.asarray(tiny, a_c.dtype), a_c)
        L = jnp.cumsum(jnp.log(jnp.abs(a_safe)), axis=-1)
        phi = jnp.cumsum(jnp.angle(a_safe), axis=-1)
        rot = (jnp.cos(phi), jnp.sin(phi))  # e^{i phi_t} = cos + i sin
    else:
        L = jnp.cumsum(jnp.log(jnp.maximum(jnp.abs(a_c), tiny)), axis=-1)
        odd = jnp.cumsum((a_c < 0).astype(jnp.int32), axis=-1) % 2
        rot = (1.0 - 2.0 * odd.astype(rdtype),)  # (-1)^{number of negative gates}, exact
    causal = jnp.tril(jnp.ones((C, C), bool))
    # exp of the masked difference (not a mask after exp: L_t - L_s > 0 above the diagonal may
    # overflow, and inf * 0 would poison the gradient)
    decay = jnp.exp(jnp.where(causal, L[..., :, None] - L[..., None, :], -jnp.inf))  # (B, H, N, C, C)
    scores = sum(
        jnp.einsum("bhncd,bhnsd->bhncs", q_c * r[..., None], k_c * r[..., None]) for r in rot
    )
    out = jnp.einsum("bhncs,bhnse->bhnce", scores * decay, v_c)

    # Chunk contributions U (B, H, N, dk, dv) and total gates g (B, H, N).
    to_end = jnp.exp(L[..., -1:] - L)  # |prod_{s<r<=end} a_r|
    if complex_:
        cos_e, sin_e = rot[0][..., -1:], rot[1][..., -1:]
        w_re = to_end * (cos_e * rot[0] + sin_e * rot[1])  # Re e^{i (phi_end - phi_s)}
        w_im = to_end * (sin_e * rot[0] - cos_e * rot[1])
        u_re = jnp.einsum("bhncd,bhnce->bhnde", k_c, v_c * w_re[..., None])
        u_im = jnp.einsum("bhncd,bhnce->bhnde", k_c, v_c * w_im[..., None])
        U = jax.lax.complex(u_re, u_im)
        g = jax.lax.complex(jnp.exp(L[..., -1]) * cos_e[..., 0], jnp.exp(L[..., -1]) * sin_e[..., 0])
    else:
        sign_e = rot[0][..., -1:]
        U = jnp.einsum("bhncd,bhnce->bhnde", k_c, v_c * (to_end * sign_e * rot[0])[..., None])
        g = jnp.exp(L[..., -1]) * sign_e[..., 0]
    h0 = None if h0 is None else h0.astype(sdtype)
    ends = gate_loop_scan_sequential(g[..., None, None], U, axis=2, h0=h0)  # state after each chunk
    first = jnp.zeros_like(ends[:, :, :1]) if h0 is None else h0[:, :, None]
    starts = jnp.concatenate([first, ends[:, :, :-1]], axis=2)  # state entering each chunk

    from_start = jnp.exp(L)[..., None]  # |prod_{c<=r<=t} a_r|
    if complex_:
        qs_re = jnp.einsum("bhncd,bhnde->bhnce", q_c, starts.real)
        qs_im = jnp.einsum("bhncd,bhnde->bhnce", q_c, starts.imag)
        out = out + from_start * (rot[0][..., None] * qs_re - rot[1][..., None] * qs_im)
    else:
        out = out + from_start * rot[0][..., None] * jnp.einsum("bhncd,bhnde->bhnce", q_c, starts)
    out = jnp.moveaxis(out, 1, 3).reshape(B, N * C, H, -1)[:, :T]
    return out.astype(out_dtype), ends[:, :, -1]
