"""Autoregressive sampling: temperature, top-k or greedy, with or without a decoding cache."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from physnets_jax.model import Decoder, check_tokens


def sample_logits(
    logits_BxV: jax.Array, key: jax.Array, *, temperature: float = 1.0, top_k: int | None = None,
    greedy: bool = False,
) -> jax.Array:
    """Next token ids (B,) from last-position logits: argmax, or a draw from softmax(logits / T)
    restricted to the top_k largest logits."""
    if greedy:
        return jnp.argmax(logits_BxV, axis=-1)
    logits_BxV = logits_BxV / temperature
    if top_k is not None:
        kth_B1 = jax.lax.top_k(logits_BxV, min(top_k, logits_BxV.shape[-1]))[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth_B1, -jnp.inf, logits_BxV)
    return jax.random.categorical(key, logits_BxV, axis=-1)


@partial(jax.jit, static_argnums=0)
def _forward_cached(graphdef, state, tokens_BxT, cache):
    model = nnx.merge(graphdef, state)
    logits, cache = model(tokens_BxT, cache=cache)
    return logits[:, -1], cache


PROGRESS_EVERY = 256  # tokens between two progress reports of generate(progress=...)
_progress_callbacks: list[Callable[[int], None]] = []  # the progress function of the running call


def _report_progress(done) -> None:
    if _progress_callbacks:
        _progress_callbacks[-1](int(done))


@partial(jax.jit, static_argnums=0, static_argnames=("top_k", "greedy", "report"))
def _decode_cached(graphdef, state, last_BxV, cache, keys_Nx, temperature, *, top_k, greedy, report=False):
    """Sample len(keys) tokens (B, N) from the prompt's last logits, one cached step per token.

    One compiled lax.scan for the whole loop: a Python loop of jitted steps paid a dispatch, a
    pytree flattening of every parameter and a host round trip per token, which on CPU cost more
    than the cached step itself at small model sizes. With `report`, a host callback inside the
    scan reports the number of tokens done every PROGRESS_EVERY tokens (the same sampled tokens).
    """
    model = nnx.merge(graphdef, state)
    sample = partial(sample_logits, temperature=temperature, top_k=top_k, greedy=greedy)
    first_B = sample(last_BxV, keys_Nx[0])

    def step(carry, index_key):
        index, key = index_key
        token_B, cache = carry
        logits_BxTxV, cache = model(token_B[:, None], cache=cache)
        next_B = sample(logits_BxTxV[:, -1], key)
        if report:
            done = index + 2  # the first token, and this one
            jax.lax.cond(done % PROGRESS_EVERY == 0, lambda: jax.debug.callback(_report_progress, done, ordered=True),
                         lambda: None)
        return (next_B, cache), next_B

    n = keys_Nx.shape[0] - 1
    _, rest_NxB = jax.lax.scan(step, (first_B, cache), (jnp.arange(n), keys_Nx[1:]))
    return jnp.concatenate([first_B[:, None], rest_NxB.T], axis=1)


@partial(jax.jit, static_argnums=(0,))
def _forward_at(graphdef, state, tokens_BxT, index):
    model = nnx.merge(graphdef, state)
    return jnp.take(model(tokens_BxT), index, axis=1)


def _check_generate_args(model: Decoder, prompt_BxT, max_new_tokens: int, temperature, top_k) -> None:
    check_tokens(prompt_BxT, model.cfg.replace(embedding="token"))
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a non-negative integer")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (use greedy=True for argmax)")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or None")


def generate(
    model: Decoder,
    prompt_BxT,
    max_new_tokens: int,
    *,
    key: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    use_cache: bool = True,
    crop: bool = False,
    progress: Callable[[int], None] | None = None,
) -> jax.Array:
    """Extend prompt (B, T) by max_new_tokens sampled tokens: returns (B, T + max_new_tokens).

    With use_cache the prompt is encoded once and each new token runs one cached step. Models
    with learned absolute positions cannot go past block_size: that raises a ValueError unless
    crop=True, which slides a block_size window and re-runs it per token (nanoGPT's behaviour).
    The model is put in eval mode (dropout off). `progress(n)` is called with the number of new
    tokens done every PROGRESS_EVERY tokens and at the end (the tokens are the same either way).
    """
    _check_generate_args(model, prompt_BxT, max_new_tokens, temperature, top_k)
    prompt_BxT = jnp.asarray(prompt_BxT)
    B, T = prompt_BxT.shape
    total = T + max_new_tokens
    cfg = model.cfg
    if not cfg.extrapolates and total > cfg.block_size and not crop:
        raise ValueError(
            f"prompt ({T}) + max_new_tokens ({max_new_tokens}) = {total} exceeds block_size="
            f"{cfg.block_size}: embedding={cfg.embedding!r} has learned positions only up to "
            "block_size; pass crop=True to slide a block_size window instead"
        )
    key = jax.random.key(0) if key is None else key
    model.eval()
    graphdef, state = nnx.split(model)
    keys = jax.random.split(key, max(max_new_tokens, 1))
    out = np.zeros((B, total), dtype=np.asarray(prompt_BxT).dtype)
    out[:, :T] = np.asarray(prompt_BxT)
    if max_new_tokens == 0:
        return jnp.asarray(out)
    sample = partial(sample_logits, temperature=temperature, top_k=top_k, greedy=greedy)

    if use_cache and (cfg.extrapolates or total <= cfg.block_size):
        dtype = jax.tree.leaves(nnx.state(model, nnx.Param))[0].dtype
        cache = model.init_cache(B, total, dtype)
        last_BxV, cache = _forward_cached(graphdef, state, prompt_BxT, cache)
        if progress is not None:
            _progress_callbacks.append(progress)
        try:
            out[:, T:] = np.asarray(_decode_cached(
                graphdef, state, last_BxV, cache, keys, temperature, top_k=top_k, greedy=greedy,
                report=progress is not None,
            ))
        finally:
            if progress is not None:
                _progress_callbacks.pop()
                progress(max_new_tokens)
        return jnp.asarray(out)

    # No cache: re-run the model each step on a fixed-shape buffer (causal, so the zero padding
    # after position t does not change the logits at t); one compilation for the whole loop.
    width = min(total, cfg.block_size) if not cfg.extrapolates else total
    for i in range(max_new_tokens):
        t = T + i
        start = max(0, t - width)
        window = jnp.asarray(out[:, start : start + width])
        last_BxV = _forward_at(graphdef, state, window, t - 1 - start)
        out[:, t] = np.asarray(sample(last_BxV, keys[i]))
        if progress is not None and ((i + 1) % PROGRESS_EVERY == 0 or i + 1 == max_new_tokens):
            progress(i + 1)
    return jnp.asarray(out)
