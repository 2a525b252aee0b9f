"""Autoregressive sampling: temperature, top-k or greedy, with or without a decoding cache."""

from __future__ import annotations

import torch

from physnets_torch.model import Decoder, check_tokens


def sample_logits(
    logits_BxV: torch.Tensor, generator: torch.Generator | None = None, *, temperature: float = 1.0,
    top_k: int | None = None, greedy: bool = False,
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits: argmax, or a draw from softmax(logits / T)
    restricted to the top_k largest logits."""
    if greedy:
        return logits_BxV.argmax(dim=-1)
    logits_BxV = logits_BxV / temperature
    if top_k is not None:
        kth_B1 = torch.topk(logits_BxV, min(top_k, logits_BxV.shape[-1])).values[:, -1:]
        logits_BxV = logits_BxV.masked_fill(logits_BxV < kth_B1, float("-inf"))
    probs = torch.softmax(logits_BxV, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _check_generate_args(model: Decoder, prompt_BxT, max_new_tokens: int, temperature, top_k) -> None:
    check_tokens(prompt_BxT, model.cfg.replace(embedding="token"))
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (use greedy=True for argmax)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")


@torch.no_grad()
def generate(
    model: Decoder,
    prompt_BxT: torch.Tensor,
    max_new_tokens: int,
    *,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    crop: bool = False,
) -> torch.Tensor:
    """Extend prompt (B, T) by max_new_tokens sampled tokens: returns (B, T + max_new_tokens).

    With use_cache the prompt is encoded once and each new token runs one cached step. Models
    with learned absolute positions cannot go past block_size: that raises a ValueError unless
    crop=True, which slides a block_size window and re-runs it per token (nanoGPT's behaviour).
    The model is put in eval mode (dropout off).
    """
    _check_generate_args(model, prompt_BxT, max_new_tokens, temperature, top_k)
    B, T = prompt_BxT.shape
    total = T + max_new_tokens
    cfg = model.cfg
    if not cfg.extrapolates and total > cfg.block_size and not crop:
        raise ValueError(
            f"prompt ({T}) + max_new_tokens ({max_new_tokens}) = {total} exceeds block_size="
            f"{cfg.block_size}: embedding={cfg.embedding!r} has learned positions only up to "
            "block_size; pass crop=True to slide a block_size window instead"
        )
    model.eval()
    out = torch.zeros((B, total), dtype=prompt_BxT.dtype, device=prompt_BxT.device)
    out[:, :T] = prompt_BxT
    if max_new_tokens == 0:
        return out
    sample = lambda logits: sample_logits(  # noqa: E731
        logits, generator, temperature=temperature, top_k=top_k, greedy=greedy
    )
    if use_cache and (cfg.extrapolates or total <= cfg.block_size):
        cache = model.init_cache(B, total)
        logits, cache = model(prompt_BxT, cache=cache)
        for i in range(max_new_tokens):
            token_B = sample(logits[:, -1])
            out[:, T + i] = token_B
            if i + 1 < max_new_tokens:
                logits, cache = model(token_B[:, None], cache=cache)
        return out
    width = min(total, cfg.block_size) if not cfg.extrapolates else total
    for i in range(max_new_tokens):
        t = T + i
        start = max(0, t - width)
        logits = model(out[:, start:t])
        out[:, t] = sample(logits[:, -1])
    return out
