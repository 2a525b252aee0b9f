"""The GateLoop operator in chunked matmul form, torch twin of physnets_jax/ops/gate_loop_chunked.py
(same formulas, same argument checks; the math and its numerical safety are in that module's
docstring). Autograd differentiates it; the scan over the T / C chunk states is
physnets_torch.ops.gate_loop.gate_loop_scan (custom reverse-scan backward).
"""

from __future__ import annotations

import torch

from physnets_core.checks import check_chunked_args
from physnets_torch.ops.gate_loop import gate_loop_scan


def _blocks(x: torch.Tensor, B: int, N: int, C: int, H: int) -> torch.Tensor:
    """(B, N*C, H, ...) -> (B, H, N, C, ...)."""
    return x.reshape((B, N, C, H) + tuple(x.shape[3:])).movedim(3, 1)


def gate_loop_chunked_matmul(q, k, v, a, h0=None, *, chunk: int = 64):
    """o (B, T, H, dv) in q's dtype and the last state S_T (B, H, dk, dv) in a's dtype, from
    q, k (B, T, H, dk), v (B, T, H, dv), a (B, T, H) real or complex, h0 (B, H, dk, dv) or None."""
    check_chunked_args(q.shape, k.shape, v.shape, a.shape, None if h0 is None else h0.shape, chunk)
    complex_ = a.is_complex()
    rdtype = a.real.dtype if complex_ else torch.promote_types(torch.promote_types(q.dtype, a.dtype), torch.float32)
    sdtype = a.dtype if complex_ else rdtype
    out_dtype = q.dtype
    B, T, H, dk = q.shape
    C = min(chunk, T)
    N = -(-T // C)
    pad = N * C - T
    q, k, v = (x.to(rdtype) for x in (q, k, v))
    a = a.to(sdtype)
    if pad:  # padded positions: a = 1, k = v = q = 0, so they leave the state unchanged
        q, k, v = (torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad)) for x in (q, k, v))
        a = torch.cat([a, torch.ones((B, pad, H), dtype=a.dtype, device=a.device)], 1)
    q_c, k_c, v_c = (_blocks(x, B, N, C, H) for x in (q, k, v))  # (B, H, N, C, d)
    a_c = _blocks(a, B, N, C, H)  # (B, H, N, C)

    tiny = torch.finfo(rdtype).tiny
    if complex_:
        a_safe = torch.where(a_c.abs() < tiny, torch.full_like(a_c, tiny), a_c)
        L = torch.cumsum(a_safe.abs().log(), -1)
        phi = torch.cumsum(a_safe.angle(), -1)
        rot = (phi.cos(), phi.sin())
    else:
        L = torch.cumsum(a_c.abs().clamp(min=tiny).log(), -1)
        odd = torch.cumsum((a_c < 0).to(torch.int32), -1) % 2
        rot = (1.0 - 2.0 * odd.to(rdtype),)
    causal = torch.ones((C, C), dtype=torch.bool, device=q.device).tril()
    diff = L[..., :, None] - L[..., None, :]
    decay = torch.where(causal, diff, torch.full_like(diff, float("-inf"))).exp()  # (B, H, N, C, C)
    scores = sum(
        torch.einsum("bhncd,bhnsd->bhncs", q_c * r[..., None], k_c * r[..., None]) for r in rot
    )
    out = torch.einsum("bhncs,bhnse->bhnce", scores * decay, v_c)

    to_end = (L[..., -1:] - L).exp()
    if complex_:
        cos_e, sin_e = rot[0][..., -1:], rot[1][..., -1:]
        w_re = to_end * (cos_e * rot[0] + sin_e * rot[1])
        w_im = to_end * (sin_e * rot[0] - cos_e * rot[1])
        u_re = torch.einsum("bhncd,bhnce->bhnde", k_c, v_c * w_re[..., None])
        u_im = torch.einsum("bhncd,bhnce->bhnde", k_c, v_c * w_im[..., None])
        U = torch.complex(u_re, u_im)
        g_mag = L[..., -1].exp()
        g = torch.complex(g_mag * cos_e[..., 0], g_mag * sin_e[..., 0])
    else:
        sign_e = rot[0][..., -1:]
        U = torch.einsum("bhncd,bhnce->bhnde", k_c, v_c * (to_end * sign_e * rot[0])[..., None])
        g = L[..., -1].exp() * sign_e[..., 0]
    h0 = None if h0 is None else h0.to(sdtype)
    ends = gate_loop_scan(g[..., None, None], U, axis=2, h0=h0)  # state after each chunk
    first = torch.zeros_like(ends[:, :, :1]) if h0 is None else h0[:, :, None]
    starts = torch.cat([first, ends[:, :, :-1]], 2)  # state entering each chunk

    from_start = L.exp()[..., None]
    if complex_:
        qs_re = torch.einsum("bhncd,bhnde->bhnce", q_c, starts.real)
        qs_im = torch.einsum("bhncd,bhnde->bhnce", q_c, starts.imag)
        out = out + from_start * (rot[0][..., None] * qs_re - rot[1][..., None] * qs_im)
    else:
        out = out + from_start * rot[0][..., None] * torch.einsum("bhncd,bhnde->bhnce", q_c, starts)
    out = out.movedim(1, 3).reshape(B, N * C, H, -1)[:, :T]
    return out.to(out_dtype), ends[:, :, -1]
