"""Language-model losses on logits (B, T, V) and integer targets (B, T)."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F


def cross_entropy(logits_BxTxV: torch.Tensor, targets_BxT: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (natural log) over all positions: scalar."""
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {tuple(logits_BxTxV.shape)} does not match targets shape "
            f"{tuple(targets_BxT.shape)} (logits must be targets' shape plus a vocabulary axis)"
        )
    return F.cross_entropy(logits_BxTxV.reshape(-1, logits_BxTxV.shape[-1]), targets_BxT.reshape(-1))


# --- Wave-Native GPT: Quantum Field Entanglement (QFE) loss (twin of physnets_jax.losses) ---


def qfe_projection(vocab_size: int, projection_dim: int = 256, seed: int = 0) -> np.ndarray:
    """Fixed random projection (vocab_size, projection_dim) / sqrt(projection_dim), float64 numpy from
    numpy's default_rng(seed): the same matrix as physnets_jax.losses.qfe_projection."""
    return _qfe_projection(int(vocab_size), int(projection_dim), int(seed))


@functools.lru_cache(maxsize=4)
def _qfe_projection(vocab_size: int, projection_dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((vocab_size, projection_dim)) / np.sqrt(projection_dim)
    matrix.setflags(write=False)
    return matrix


def qfe_coherence(
    logits_BxTxV: torch.Tensor, targets_BxT: torch.Tensor, *, amplitude_threshold: float = 0.01,
    temperature: float = 1.0, projection=None, projection_dim: int | None = 256, projection_seed: int = 0,
) -> torch.Tensor:
    """QFE phase-coherence term (formula: physnets_jax.losses.qfe_coherence; projection_dim=None never
    projects): scalar."""
    V = logits_BxTxV.shape[-1]
    if logits_BxTxV.shape[:-1] != targets_BxT.shape:
        raise ValueError(
            f"logits shape {tuple(logits_BxTxV.shape)} does not match targets shape {tuple(targets_BxT.shape)}"
        )
    dtype, device = logits_BxTxV.dtype, logits_BxTxV.device
    probs = torch.softmax(logits_BxTxV / temperature, dim=-1)
    if projection is None and projection_dim is not None and V > projection_dim:
        projection = qfe_projection(V, projection_dim, projection_seed)
    if projection is not None:
        if projection.ndim != 2 or projection.shape[0] != V:
            raise ValueError(
                f"QFE projection has shape {tuple(projection.shape)} but the logits have vocab {V}: "
                f"the projection must be (vocab={V}, d)"
            )
        if isinstance(projection, torch.Tensor):
            P = projection.to(dtype=dtype, device=device)
        else:
            P = torch.tensor(np.array(projection), dtype=dtype, device=device)
        signal_out = probs @ P
        signal_tgt = F.embedding(targets_BxT, P)
    else:
        signal_out = probs
        signal_tgt = F.one_hot(targets_BxT, V).to(dtype)
    a = torch.fft.rfft(signal_out, dim=1)
    b = torch.fft.rfft(signal_tgt, dim=1)
    mask = (a.abs() > amplitude_threshold) & (b.abs() > amplitude_threshold)
    one = torch.ones((), dtype=a.dtype, device=device)
    a = torch.where(mask, a, one)
    b = torch.where(mask, b, one)
    penalty = 1.0 - torch.cos(torch.angle(a) - torch.angle(b))
    weighted = torch.where(mask, a.abs() * b.abs() * penalty, torch.zeros((), dtype=dtype, device=device))
    return weighted.sum() / (mask.to(dtype).sum() + 1e-8)


def qfe_loss(
    logits_BxTxV: torch.Tensor, targets_BxT: torch.Tensor, *, lambda_coherence: float = 0.05,
    amplitude_threshold: float = 0.01, temperature: float = 1.0, projection=None, projection_dim: int | None = 256,
    projection_seed: int = 0,
) -> torch.Tensor:
    """QFE loss = cross_entropy + lambda_coherence * qfe_coherence (defaults as physics_optim.py)."""
    ce = cross_entropy(logits_BxTxV, targets_BxT)
    coherence = qfe_coherence(
        logits_BxTxV, targets_BxT, amplitude_threshold=amplitude_threshold, temperature=temperature,
        projection=projection, projection_dim=projection_dim, projection_seed=projection_seed,
    )
    return ce + lambda_coherence * coherence
