"""Fused causal attention with the ripple decay, through torch.nn.attention.flex_attention.

Torch twin of physnets_jax/ops/pallas_attention.py (same function, same name): FlexAttention
generates a flash kernel from a `score_mod` that adds |lambda_h| * (j - i) to each score and a
causal block mask that skips the key blocks above the diagonal, so no (T, T) tensor is stored in
the forward or the backward. Used for attention_impl "pallas" (and "auto" on CUDA).

Where it runs: on CUDA, compiled (a Triton kernel, forward and backward; the decay's gradient
flows through the captured decay). On CPU, torch 2.13's FlexAttention has no backward, so the
CPU path here is inference only (eager, which materialises the scores: for parity checks);
training on CPU raises and names attention_impl='auto' (dense there) as the alternative.
(Compiled, its CPU forward beat the dense path 2.8x at 1024 tokens:
benchmarks/flex_attention_cpu.py; without a backward it cannot serve CPU training.)
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from physnets_core.checks import check_pallas_block

DEVICE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _causal(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx


@functools.lru_cache(maxsize=32)
def _causal_block_mask(T: int, device: str):
    return create_block_mask(_causal, None, None, T, T, device=device)


@functools.lru_cache(maxsize=1)
def _compiled_flex():
    # torch.compile's default dynamic=None: static for the training shape, and a second length
    # (evaluation, generation without a cache) recompiles once with the length symbolic.
    return torch.compile(flex_attention)


def native_flex_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether FlexAttention runs fused, forward and backward, for tensors on this device and dtype."""
    return device.type == "cuda" and dtype in DEVICE_DTYPES


def pallas_causal_attention(
    q_BxHxTxD: torch.Tensor, k_BxHxTxD: torch.Tensor, v_BxHxTxD: torch.Tensor, *,
    decay_H: torch.Tensor | None = None, block: int = 128,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + |lambda_h| min(j - i, 0), causal mask) v per head, fused: (B, H, T, D).

    `block` is checked against the JAX kernel's tile rule (a power of two >= 16) so that one config
    means the same in both backends; FlexAttention picks its own kernel tiles, and the causal block
    mask uses its default 128-blocks.
    """
    B, H, T, D = q_BxHxTxD.shape
    if tuple(k_BxHxTxD.shape) != (B, H, T, D) or tuple(v_BxHxTxD.shape) != (B, H, T, D):
        raise ValueError(
            f"q {tuple(q_BxHxTxD.shape)}, k {tuple(k_BxHxTxD.shape)}, v {tuple(v_BxHxTxD.shape)}: pallas "
            "attention needs q, k and v of one shape (B, H, T, D) (no cache)"
        )
    if decay_H is not None and tuple(decay_H.shape) != (H,):
        raise ValueError(f"decay_H {tuple(decay_H.shape)} must have shape (n_head,) = ({H},)")
    check_pallas_block(block)
    device, dtype = q_BxHxTxD.device, q_BxHxTxD.dtype
    if not (dtype == k_BxHxTxD.dtype == v_BxHxTxD.dtype):
        raise ValueError(
            f"q {dtype}, k {k_BxHxTxD.dtype}, v {v_BxHxTxD.dtype}: pallas attention needs one dtype")
    allowed = DEVICE_DTYPES + ((torch.float64,) if device.type == "cpu" else ())
    if dtype not in allowed:
        raise ValueError(
            f"dtype {dtype}: attention_impl='pallas' takes float32, bfloat16 or float16 on CUDA "
            "(float64 only on CPU, inference); use attention_impl='dense'"
        )
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q_BxHxTxD, k_BxHxTxD, v_BxHxTxD, decay_H))
    if device.type != "cuda" and needs_grad:
        raise ValueError(
            f"attention_impl='pallas' (FlexAttention) has no backward on '{device.type}' in torch "
            f"{torch.__version__.split('+')[0]}: use attention_impl='auto' (dense here), or run without "
            "gradients (torch.no_grad / eval)"
        )
    if torch.compiler.is_compiling():
        mask = create_block_mask(_causal, None, None, T, T, device=str(device))
    else:
        mask = _causal_block_mask(T, str(device))
    score_mod = None
    if decay_H is not None:
        # |lambda_h| is taken inside the score_mod, on the captured decay itself: an abs computed
        # in the graph beforehand makes inductor's CPU flex lowering fail ("no choices"). The
        # slope and distance are in the scores' precision (float32 for half inputs), like JAX's.
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + decay_H[h].abs().to(score.dtype) * (kv_idx - q_idx).to(score.dtype)

    args = (q_BxHxTxD, k_BxHxTxD, v_BxHxTxD)
    kwargs = dict(score_mod=score_mod, block_mask=mask, scale=D**-0.5)
    if torch.compiler.is_compiling():
        return flex_attention(*args, **kwargs)  # fused by the enclosing torch.compile
    if device.type == "cuda":
        return _compiled_flex()(*args, **kwargs)  # eager flex_attention is unfused: compile it once
    with warnings.catch_warnings():  # CPU inference: the unfused reference is the point here
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return flex_attention(*args, **kwargs)
