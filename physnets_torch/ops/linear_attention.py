"""Causal kernel (linear) attention: chunked form (memory linear in T) and the quadratic reference.

Twin of physnets_jax/ops/linear_attention.py (same formulas, same chunking; see its doc).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_map(x: torch.Tensor, kernel: str) -> torch.Tensor:
    """Kernel feature map phi(x), elementwise: elu1 -> elu(x) + 1, sigmoid, exp, linear/identity -> x."""
    if kernel == "elu1":
        return F.elu(x) + 1.0
    if kernel == "sigmoid":
        return torch.sigmoid(x)
    if kernel == "exp":
        return torch.exp(x)
    if kernel in ("linear", "identity"):
        return x
    raise ValueError(f"kernel={kernel!r} is not a known kernel; valid choices: elu1, sigmoid, exp, linear, identity")


def causal_linear_attention_quadratic(
    q_BxHxTxF: torch.Tensor, k_BxHxTxF: torch.Tensor, v_BxHxTxD: torch.Tensor, *, normalize: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Reference O(T^2) form: masked (q' k'^T) v, divided by its row sums + eps: (B, H, T, D)."""
    T = q_BxHxTxF.shape[2]
    scores = torch.einsum("bhtf,bhsf->bhts", q_BxHxTxF, k_BxHxTxF)
    mask = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
    scores = torch.where(mask, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    num = torch.einsum("bhts,bhsd->bhtd", scores, v_BxHxTxD)
    if not normalize:
        return num
    return num / (scores.sum(dim=-1, keepdim=True) + eps)


def causal_linear_attention(
    q_BxHxTxF: torch.Tensor,
    k_BxHxTxF: torch.Tensor,
    v_BxHxTxD: torch.Tensor,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
    chunk_size: int = 64,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_state: bool = False,
):
    """Chunked causal linear attention: (B, H, T, D), or (out, (S (B, H, F, D), z (B, H, F)))."""
    B, H, T, Fd = q_BxHxTxF.shape
    D = v_BxHxTxD.shape[-1]
    if tuple(k_BxHxTxF.shape) != (B, H, T, Fd) or tuple(v_BxHxTxD.shape[:3]) != (B, H, T):
        raise ValueError(
            f"q {tuple(q_BxHxTxF.shape)}, k {tuple(k_BxHxTxF.shape)}, v {tuple(v_BxHxTxD.shape)}: q and k "
            "must share (B, H, T, F) and v must be (B, H, T, D)"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:
        q_BxHxTxF, k_BxHxTxF, v_BxHxTxD = (F.pad(a, (0, 0, 0, pad)) for a in (q_BxHxTxF, k_BxHxTxF, v_BxHxTxD))
    N = (T + pad) // C
    q = q_BxHxTxF.reshape(B, H, N, C, Fd)
    k = k_BxHxTxF.reshape(B, H, N, C, Fd)
    v = v_BxHxTxD.reshape(B, H, N, C, D)

    scores = torch.einsum("bhncf,bhnsf->bhncs", q, k)
    mask = torch.ones(C, C, dtype=torch.bool, device=scores.device).tril()
    scores = torch.where(mask, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    num = torch.einsum("bhncs,bhnsd->bhncd", scores, v)

    kv = torch.einsum("bhnsf,bhnsd->bhnfd", k, v)
    S_incl = torch.cumsum(kv, dim=2)
    S_excl = torch.cat([torch.zeros_like(S_incl[:, :, :1]), S_incl[:, :, :-1]], dim=2)
    if state is not None:
        S_excl = S_excl + state[0][:, :, None]
    num = num + torch.einsum("bhncf,bhnfd->bhncd", q, S_excl)
    if normalize or return_state:
        ks = k.sum(dim=3)
        z_incl = torch.cumsum(ks, dim=2)
        z_excl = torch.cat([torch.zeros_like(z_incl[:, :, :1]), z_incl[:, :, :-1]], dim=2)
        if state is not None:
            z_excl = z_excl + state[1][:, :, None]
    if normalize:
        den = scores.sum(dim=-1) + torch.einsum("bhncf,bhnf->bhnc", q, z_excl)
        out = num / (den[..., None] + eps)
    else:
        out = num
    out = out.reshape(B, H, N * C, D)[:, :, :T]
    if not return_state:
        return out
    S_last = S_excl[:, :, -1] + kv[:, :, -1]
    z_last = z_excl[:, :, -1] + ks[:, :, -1]
    return out, (S_last, z_last)
