"""The training loop: one jitted, buffer-donating step; periodic evaluation and samples."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from physnets_jax.data import TokenData
from physnets_jax.losses import cross_entropy
from physnets_jax.model import Decoder


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings (defaults: the RippleGPT reference, AdamW 1e-3, betas 0.9/0.99)."""

    steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_batches: int = 10
    log_interval: int = 10
    seed: int = 1337

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "log_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps} must be >= 0")


def decay_mask(params: nnx.State) -> nnx.State:
    """True for parameters that get weight decay: matrices (kernels, embeddings), not norms,
    biases, gains or per-head scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    """Clipped AdamW with linear warmup then cosine decay to lr * min_lr_ratio."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, tc.lr, max(tc.warmup_steps, 1), max(tc.steps, tc.warmup_steps + 1), tc.lr * tc.min_lr_ratio
    )
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip),
        optax.adamw(schedule, b1=tc.beta1, b2=tc.beta2, weight_decay=tc.weight_decay, mask=decay_mask),
    )


@partial(jax.jit, static_argnums=(0, 1), donate_argnums=(2, 3, 4))
def train_step(graphdef, tx, params, rest, opt_state, x, y):
    """One optimizer step on a batch: returns (params, rest, opt_state, loss).

    `rest` is the non-parameter state (dropout RNG counters), threaded through explicitly.
    """
    model = nnx.merge(graphdef, params, rest)
    loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x), y))(model)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss


@partial(jax.jit, static_argnums=0)
def eval_loss(graphdef, params, rest, x, y):
    """Mean cross-entropy of a batch with dropout off."""
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return cross_entropy(model(x), y)


def estimate_loss(graphdef, params, rest, data: TokenData, tc: TrainConfig, block_size: int) -> dict:
    """Mean loss over eval_batches fixed batches of each split (same batches every call)."""
    out = {}
    for split in ("train", "val"):
        rng = np.random.default_rng(tc.seed + 1)
        losses = [
            eval_loss(graphdef, params, rest, *data.batch(split, tc.batch_size, block_size, rng))
            for _ in range(tc.eval_batches)
        ]
        out[split] = float(np.mean(jax.device_get(losses)))
    return out


def train(
    model: Decoder,
    data: TokenData,
    tc: TrainConfig,
    *,
    block_size: int | None = None,
    on_log: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train `model` in place on `data`; returns a summary (final losses, tokens/s, history)."""
    block_size = block_size or model.cfg.block_size
    tx = make_optimizer(tc)
    model.train()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    rng = np.random.default_rng(tc.seed)
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.steps, desc="train", unit="step", dynamic_ncols=True)
    tokens_per_step = tc.batch_size * block_size
    t_start = time.perf_counter()
    t_window, steps_window = t_start, 0
    loss = None
    for step in range(1, tc.steps + 1):
        x, y = data.batch("train", tc.batch_size, block_size, rng)
        params, rest, opt_state, loss = train_step(graphdef, tx, params, rest, opt_state, x, y)
        steps_window += 1
        if step == 1:  # leave compilation out of the throughput figures
            jax.block_until_ready(loss)
            t_start = t_window = time.perf_counter()
            steps_window = 0
        record = None
        if step % tc.log_interval == 0 or step == tc.steps:
            loss_value = float(loss)  # the only host sync, every log_interval steps
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"loss became {loss_value} at step {step}")
            now = time.perf_counter()
            tok_s = steps_window * tokens_per_step / max(now - t_window, 1e-9)
            t_window, steps_window = now, 0
            record = {"step": step, "loss": loss_value, "tokens_per_s": tok_s}
            if bar is not None:
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tok_s:,.0f}")
        if step % tc.eval_interval == 0 or step == tc.steps:
            losses = estimate_loss(graphdef, params, rest, data, tc, block_size)
            record = {**(record or {"step": step}), "train_loss": losses["train"], "val_loss": losses["val"]}
            message = f"step {step}: train {losses['train']:.4f}, val {losses['val']:.4f}"
            bar.write(message) if bar is not None else print(message, flush=True)
        if record is not None:
            history.append(record)
            if on_log is not None:
                on_log(record)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - t_start
    nnx.update(model, params, rest)
    model.eval()
    final = history[-1]
    return {
        "steps": tc.steps,
        "train_loss": final.get("train_loss"),
        "val_loss": final.get("val_loss"),
        "tokens_per_s": (tc.steps - 1) * tokens_per_step / elapsed if tc.steps > 1 else float("nan"),
        "seconds": elapsed,
        "history": history,
    }
