"""The training loop: one jitted, buffer-donating step; periodic evaluation, samples, metrics and
orbax checkpoints (every N steps and on SIGINT/SIGTERM); exact resume; optional sharding.

Only logging and checkpoint steps synchronise with the host: per-step losses stay on the device
until the next log step, where they are fetched together (so a NaN is reported with its step).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import signal
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from physnets_jax.losses import cross_entropy
from physnets_jax.model import Decoder
from physnets_jax.training.data import TokenData

OPTIMIZERS = ("adamw", "sgd", "rgd")
CONDITIONING = ("none", "schedule", "learned")
LOSSES = ("ce", "qfe")
SCHEDULES = ("cosine", "constant")


class TrainingDiverged(FloatingPointError):
    """The loss or the parameters became NaN/inf; the message names the step and the last good checkpoint."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loop settings: the single source of training defaults (the `physnets train`
    / train_jax.py options, train(), compare and the ablations all start from these). The defaults
    are the quick CPU run of docs/training.md: AdamW 2e-3 with betas (0.9, 0.99), 300 steps of 16
    sequences, warmup 30, cosine decay to 10%, a checkpoint every 100 steps."""

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    schedule: str = "cosine"  # cosine: warmup then cosine decay to lr * min_lr_ratio; constant: warmup then lr
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # global-norm clipping; 0 turns it off
    optimizer: str = "adamw"  # adamw | sgd | rgd
    momentum: float = 0.9  # sgd only (0: plain SGD)
    condition: str = "none"  # none | schedule | learned: condition_gradients before the optimizer
    rgd_strength: float = 0.5  # rgd: resonance_strength
    rgd_warmup: int = 1000  # rgd: resonance warmup steps
    loss: str = "ce"  # ce | qfe (cross-entropy + qfe_lambda * phase coherence)
    qfe_lambda: float = 0.05
    qfe_project: bool = True  # qfe: project V > 256 onto 256 dims; False: full one-hot (the headline run)
    eval_interval: int = 100
    eval_batches: int = 10
    log_interval: int = 10
    seed: int = 1337
    ckpt_interval: int = 100  # save a checkpoint every N steps (0: only at the end and on a signal)
    keep_checkpoints: int = 3
    sample_tokens: int = 200  # length of the text sample printed at each evaluation (0: none)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "log_interval", "keep_checkpoints"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name in ("warmup_steps", "ckpt_interval", "sample_tokens", "rgd_warmup", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("float", float) and (isinstance(value, bool) or not isinstance(value, (int, float))
                                               or not math.isfinite(value)):
                raise ValueError(f"{f.name}={value!r} must be a finite number")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        for name in ("weight_decay", "grad_clip", "qfe_lambda", "rgd_strength"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        for name in ("beta1", "beta2", "momentum"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1)")
        if not isinstance(self.qfe_project, bool):
            raise ValueError(f"qfe_project={self.qfe_project!r} must be True or False")
        for name, choices in (
            ("optimizer", OPTIMIZERS), ("condition", CONDITIONING), ("loss", LOSSES), ("schedule", SCHEDULES)
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not known; valid choices: {', '.join(choices)}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise a ValueError that lists them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def decay_mask(params: nnx.State) -> nnx.State:
    """True for parameters that get weight decay: matrices (kernels, embeddings), not norms,
    biases, gains or per-head scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_schedule(tc: TrainConfig) -> optax.Schedule:
    """Linear warmup from 0 to lr over warmup_steps (none when 0), then cosine decay to
    lr * min_lr_ratio at tc.steps, or constant lr."""
    decay_steps = max(tc.steps - tc.warmup_steps, 1)
    if tc.schedule == "constant":
        after = optax.constant_schedule(tc.lr)
    else:
        after = optax.cosine_decay_schedule(tc.lr, decay_steps, alpha=tc.min_lr_ratio)
    if tc.warmup_steps == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, tc.lr, tc.warmup_steps), after], [tc.warmup_steps])


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip > 0) -> condition_gradients (if condition != 'none') ->
    adamw (weight decay on matrices only) | sgd (+momentum, same decay mask) | rgd, on the
    warmup + cosine schedule."""
    schedule = make_schedule(tc)
    parts = []
    if tc.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tc.grad_clip))
    if tc.condition != "none":
        try:
            from physnets_jax.optim import condition_gradients
        except ImportError as err:
            raise ValueError(f"condition={tc.condition!r} needs physnets_jax.optim.condition_gradients ({err})") from None
        parts.append(condition_gradients(tc.condition))
    if tc.optimizer == "adamw":
        parts.append(optax.adamw(schedule, b1=tc.beta1, b2=tc.beta2, weight_decay=tc.weight_decay, mask=decay_mask))
    elif tc.optimizer == "sgd":
        if tc.weight_decay > 0:
            parts.append(optax.add_decayed_weights(tc.weight_decay, mask=decay_mask))
        parts.append(optax.sgd(schedule, momentum=tc.momentum or None))
    else:
        try:
            from physnets_jax.optim import rgd
        except ImportError as err:
            raise ValueError(f"optimizer='rgd' needs physnets_jax.optim.rgd, which is not available ({err})") from None
        parts.append(
            rgd(schedule, b1=tc.beta1, b2=tc.beta2, resonance_strength=tc.rgd_strength,
                warmup_steps=tc.rgd_warmup, weight_decay=tc.weight_decay)
        )
    return optax.chain(*parts)


# TrainConfig fields the optimizer does not read: configs that differ only in them share one
# optimizer object, hence one compiled train_step (tx is a static argument of the jit).
_LOOP_FIELDS = ("eval_interval", "eval_batches", "log_interval", "seed", "ckpt_interval", "keep_checkpoints",
                "sample_tokens", "loss", "qfe_lambda")


def _cached_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    defaults = TrainConfig()
    return _optimizer_for(tc.replace(**{k: getattr(defaults, k) for k in _LOOP_FIELDS}))


@functools.lru_cache(maxsize=16)
def _optimizer_for(tc: TrainConfig) -> optax.GradientTransformation:
    return make_optimizer(tc)


def make_loss(tc: TrainConfig) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The training loss on (logits (B, T, V), targets (B, T)): cross_entropy or qfe_loss."""
    if tc.loss == "ce":
        return cross_entropy
    try:
        from physnets_jax.losses import qfe_loss  # noqa: F401  (present?)
    except ImportError as err:
        raise ValueError(f"loss='qfe' needs physnets_jax.losses.qfe_loss ({err})") from None
    return _qfe_with_lambda(float(tc.qfe_lambda), bool(tc.qfe_project))


@functools.lru_cache(maxsize=8)
def _qfe_with_lambda(lam: float, project: bool = True):
    from physnets_jax.losses import QFE_PROJECTION_DIM, qfe_loss

    return partial(qfe_loss, lambda_coherence=lam, projection_dim=QFE_PROJECTION_DIM if project else None)


def _train_step(graphdef, tx, params, rest, opt_state, x, y, loss_fn=cross_entropy):
    model = nnx.merge(graphdef, params, rest)
    loss, grads = nnx.value_and_grad(lambda m: loss_fn(m(x), y))(model)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), rest, opt_state, loss


train_step = jax.jit(_train_step, static_argnums=(0, 1), static_argnames=("loss_fn",), donate_argnums=(2, 3, 4))
train_step.__doc__ = """One optimizer step on a batch: returns (params, rest, opt_state, loss).

`rest` is the non-parameter state (dropout RNG counters), threaded through explicitly. Jitted
with donated state buffers; graphdef, tx and loss_fn are static."""


def sharded_train_step(params, rest, opt_state):
    """train_step jitted with output shardings pinned to those of the given (sharded) state, so
    every step reuses one compilation."""
    shardings = jax.tree.map(lambda a: a.sharding, (params, rest, opt_state))
    leaves, treedef = jax.tree.flatten(shardings)
    key = (treedef, tuple(leaves))
    if key not in _SHARDED_STEPS:  # equal shardings reuse one jitted function (and its compilation)
        replicated = jax.sharding.NamedSharding(leaves[0].mesh, jax.sharding.PartitionSpec())
        if len(_SHARDED_STEPS) >= 8:
            _SHARDED_STEPS.pop(next(iter(_SHARDED_STEPS)))
        _SHARDED_STEPS[key] = jax.jit(
            _train_step, static_argnums=(0, 1), static_argnames=("loss_fn",), donate_argnums=(2, 3, 4),
            out_shardings=(*shardings, replicated),
        )
    return _SHARDED_STEPS[key]


_SHARDED_STEPS: dict = {}


@partial(jax.jit, static_argnums=0)
def eval_loss(graphdef, params, rest, x, y):
    """Mean cross-entropy of a batch with dropout off."""
    model = nnx.merge(graphdef, params, rest)
    model.eval()
    return cross_entropy(model(x), y)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def _strong(tree):
    """Copy of `tree` whose weak-typed array leaves are made strongly typed (same values)."""
    return jax.tree.map(
        lambda x: jnp.array(x, dtype=x.dtype) if getattr(x, "weak_type", False) else x, tree
    )


EVAL_STREAM = 1  # batch_rng stream of evaluation batches (training uses stream 0)


def estimate_loss(graphdef, params, rest, data: TokenData, tc: TrainConfig, block_size: int, mesh=None) -> dict:
    """Mean loss over eval_batches fixed batches of each split (same batches every call); with a
    mesh, each process reads only its rows of every batch."""
    from physnets_jax.training.sharding import global_batch

    out = {}
    for split in ("train", "val"):
        losses = [
            eval_loss(graphdef, params, rest, *global_batch(
                mesh, tc.batch_size,
                lambda rows, split=split, i=i: data.batch_at(split, tc.batch_size, block_size, tc.seed, i,
                                                              EVAL_STREAM, rows=rows)))
            for i in range(tc.eval_batches)
        ]
        out[split] = float(np.mean(jax.device_get(losses)))
    return out


def length_eval(
    model: Decoder, data: TokenData, lengths: Sequence[int], *, batch_size: int = 8, batches: int = 4, seed: int = 0
) -> list[dict]:
    """Validation loss at each sequence length: rows {'length', 'val_loss' | 'note'}. Models with
    learned positions report 'cannot extrapolate' beyond block_size instead of failing."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cfg = model.cfg
    rows = []
    for length in lengths:
        if not cfg.extrapolates and length > cfg.block_size:
            rows.append({"length": int(length), "note": f"cannot extrapolate (learned positions, block_size={cfg.block_size})"})
            continue
        if len(data.val) <= length:
            rows.append({"length": int(length), "note": f"val split too short ({len(data.val)} tokens)"})
            continue
        losses = [
            eval_loss(graphdef, params, rest, *data.batch_at("val", batch_size, int(length), seed, i, EVAL_STREAM))
            for i in range(batches)
        ]
        rows.append({"length": int(length), "val_loss": float(np.mean(jax.device_get(losses)))})
    return rows


def format_length_table(rows: Sequence[dict], block_size: int) -> str:
    """Markdown table of length_eval rows."""
    lines = ["| length | val loss | perplexity |", "|---:|---:|---:|"]
    for r in rows:
        mark = " (train block)" if r["length"] == block_size else ""
        if "val_loss" in r:
            lines.append(f"| {r['length']}{mark} | {r['val_loss']:.4f} | {math.exp(min(r['val_loss'], 50)):.2f} |")
        else:
            lines.append(f"| {r['length']}{mark} | {r['note']} | |")
    return "\n".join(lines)


def param_names(params) -> list[str]:
    """Dotted names of the leaves of an nnx.State of parameters, in jax.tree.leaves order."""
    names = []
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        parts = []
        for k in path:
            if isinstance(k, jax.tree_util.DictKey):
                parts.append(str(k.key))
            elif isinstance(k, jax.tree_util.SequenceKey):
                parts.append(str(k.idx))
            elif isinstance(k, jax.tree_util.GetAttrKey) and k.name != "value":
                parts.append(k.name)
        names.append(".".join(parts))
    return names


class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a flag the loop checks after each step; a second one
    interrupts immediately (previous handlers are restored after the first)."""

    def __init__(self, enabled: bool):
        self.signum = None
        self._previous = {}
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Throughput:
    """Tokens per second of the training steps alone: the first step (compilation), evaluation and
    checkpoint saving are left out. A window is the time between two log steps."""

    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.window_start = time.perf_counter()
        self.window_steps = 0
        self.seconds = 0.0
        self.steps = 0

    def restart(self) -> None:
        """Open a new, empty window now (after the compiling first step)."""
        self.window_start, self.window_steps = time.perf_counter(), 0

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (an evaluation, a save) out of the current window."""
        self.window_start += seconds

    def close_window(self) -> float | None:
        """Tokens/s of the window just ended (None when it holds no timed step); opens the next."""
        now = time.perf_counter()
        rate = None
        if self.window_steps:
            rate = self.window_steps * self.tokens_per_step / max(now - self.window_start, 1e-9)
            self.seconds += now - self.window_start
            self.steps += self.window_steps
        self.window_start, self.window_steps = now, 0
        return rate

    def overall(self) -> float:
        """Tokens/s over every timed step (nan when none was timed, e.g. a one-step run)."""
        return self.steps * self.tokens_per_step / self.seconds if self.seconds > 0 else float("nan")


def truncate_metrics(path: pathlib.Path, last_step: int, say: Callable[[str], None]) -> None:
    """Keep the records of steps <= last_step in a metrics.jsonl (a resume drops what came after its
    checkpoint). A torn last line (a kill during its write) is dropped; any other line that is not
    JSON raises a ValueError naming the file and line."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if i == len(lines):
                say(f"note: dropped the torn last line {i} of {path} (written when the run was killed)")
                continue
            raise ValueError(f"{path} line {i} is not JSON ({err.msg}); fix or delete that line to resume") from None
        if record.get("step", 0) <= last_step:
            kept.append(line)
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _initial_state(model: Decoder, tx, mesh):
    """(graphdef, params, rest, opt_state) of `model`, sharded over `mesh` or committed to one device."""
    from physnets_jax.training.sharding import shard_tree

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = _strong(params)  # weak-typed leaves would make the second step compile again
    if mesh is not None:
        params, rest = shard_tree(params, mesh), shard_tree(rest, mesh)
        opt_state = shard_tree(jax.jit(tx.init)(params), mesh)
    else:
        # committed to one device, like restored checkpoints, so a resume reuses the compiled step
        device = jax.local_devices()[0]
        params, rest = jax.device_put(params, device), jax.device_put(rest, device)
        opt_state = jax.device_put(tx.init(params), device)
    return graphdef, params, rest, _strong(opt_state)


def _restore(ckpt, resume: bool | int, state, meta: dict, tc: TrainConfig, say) -> tuple[Any, int]:
    """(state, start step) to continue from: the checkpoint `resume` names (True: the latest).

    A run that has no checkpoint yet (killed before its first) starts again from step 0.
    Resuming from an earlier step abandons the branch after it: its later checkpoints are
    deleted here (the metrics after it are dropped by the caller), so a later --resume
    continues this branch and never mixes the two.
    """
    from physnets_jax.training.checkpoint import CheckpointError

    step = None if resume is True else int(resume)
    if step is None and ckpt.latest_step() is None:
        say(f"note: {ckpt.directory} holds no checkpoint yet (the run stopped before its first): starting at step 0")
        return state, 0
    expect = {k: meta[k] for k in ("model_config", "train_config", "data_fingerprint") if k in meta}
    state, saved = ckpt.restore(step, state, expect=expect)
    start = int(saved["step"])
    if start > tc.steps:
        raise CheckpointError(f"checkpoint step {start} is beyond steps={tc.steps}; pass a larger --steps")
    later = [s for s in ckpt.steps() if s > start]
    # every process lists the folder before any of them deletes: orbax's delete is a collective
    # (one barrier per deleted step), so the processes must agree on the list
    from physnets_jax.training.sharding import barrier

    barrier("physnets:listed-checkpoints")
    if later:
        say(f"resuming from step {start}: deleting the later checkpoints ({', '.join(map(str, later))}) and "
            f"the metrics after step {start}, the branch abandoned here")
        ckpt.delete_after(start, later)
    return state, start


class _Loop:
    """One training run's state between steps (params, optimizer state, pending losses, history,
    last checkpoint) and the things done at log, eval and checkpoint steps."""

    def __init__(self, *, graphdef, state, tx, tc: TrainConfig, data: TokenData, block_size: int, mesh, ckpt,
                 meta: dict, start: int, metrics_file, on_log, sample_fn, say):
        self.graphdef, (self.params, self.rest, self.opt_state) = graphdef, state
        self.tx, self.tc, self.data, self.block_size, self.mesh = tx, tc, data, block_size, mesh
        self.ckpt, self.meta, self.start = ckpt, meta, start
        self.metrics_file, self.on_log, self.sample_fn, self.say = metrics_file, on_log, sample_fn, say
        self.loss_fn = make_loss(tc)
        self.schedule = make_schedule(tc)
        self.step_fn = train_step if mesh is None else sharded_train_step(self.params, self.rest, self.opt_state)
        self.history: list[dict] = []
        self.losses: dict[int, float] = {}
        self.pending: list[tuple[int, jax.Array]] = []
        self.last_ckpt = ckpt.path(start) if (ckpt is not None and start > 0) else None
        self.last_ckpt_step = start if self.last_ckpt is not None else None
        self.timer = _Throughput(tc.batch_size * block_size)

    def step(self, step: int) -> None:
        """Run training step `step` (its batch is a pure function of seed and step; with a mesh,
        each process reads only the rows its devices hold)."""
        from physnets_jax.training.sharding import global_batch

        tc = self.tc
        x, y = global_batch(self.mesh, tc.batch_size, lambda rows: self.data.batch_at(
            "train", tc.batch_size, self.block_size, tc.seed, step, rows=rows))
        self.params, self.rest, self.opt_state, loss = self.step_fn(
            self.graphdef, self.tx, self.params, self.rest, self.opt_state, x, y, loss_fn=self.loss_fn)
        self.pending.append((step, loss))
        self.timer.window_steps += 1
        if step == self.start + 1:  # leave compilation out of the throughput figures
            jax.block_until_ready(loss)
            self.timer.restart()

    def flush_losses(self) -> float | None:
        """Fetch pending per-step losses (one host sync); raise TrainingDiverged at the first non-finite."""
        if not self.pending:
            return None
        values = jax.device_get([v for _, v in self.pending])
        for (s, _), v in zip(self.pending, values, strict=True):
            v = float(v)
            if not math.isfinite(v):
                where = f"{self.last_ckpt} (step {self.last_ckpt_step})" if self.last_ckpt is not None else "none"
                raise TrainingDiverged(
                    f"loss became {v} at step {s}; stopped. Last good checkpoint: {where}. "
                    "Try a lower --lr or --grad-clip."
                )
            self.losses[s] = v
        self.pending.clear()
        return float(np.mean(values))

    def log_record(self, step: int) -> dict:
        """The metrics record of a log step (tokens_per_s is None when nothing was timed)."""
        window_loss = self.flush_losses()
        tok_s = self.timer.close_window()
        return {"step": step, "loss": self.losses[step], "window_loss": window_loss, "tokens_per_s": tok_s,
                "lr": float(self.schedule(step - 1))}

    def evaluate(self, step: int, record: dict | None) -> dict:
        """Add train/val losses (and print them, with a sample) to the record of `step`."""
        self.flush_losses()
        t_eval = time.perf_counter()
        split = estimate_loss(self.graphdef, self.params, self.rest, self.data, self.tc, self.block_size, self.mesh)
        self.say(f"step {step}: train {split['train']:.4f}, val {split['val']:.4f}")
        if self.sample_fn is not None and self.tc.sample_tokens > 0 and step != self.tc.steps:  # caller samples at the end
            from physnets_jax.training.sharding import is_main_process, to_local

            params, rest = to_local((self.params, self.rest))  # every process takes part in the gather
            if is_main_process():
                text = self.sample_fn(nnx.merge(self.graphdef, params, rest))
                self.say("sample: " + text.replace("\n", "\n        "))
        self.timer.exclude(time.perf_counter() - t_eval)  # evaluation is not training time
        return {**(record or {"step": step}), "train_loss": split["train"], "val_loss": split["val"]}

    def emit(self, record: dict) -> None:
        """Keep a record, append it to metrics.jsonl, pass it to on_log."""
        self.history.append(record)
        if self.metrics_file is not None:
            self.metrics_file.write(json.dumps(record, allow_nan=False) + "\n")
            self.metrics_file.flush()
        if self.on_log is not None:
            self.on_log(record)

    def save(self, step: int) -> None:
        """Checkpoint the state of `step` (refused when a parameter is non-finite)."""
        t_save = time.perf_counter()
        self.flush_losses()
        if not bool(_all_finite(self.params)):
            raise TrainingDiverged(
                f"parameters became non-finite after step {step}; not saved. Last good checkpoint: "
                f"{self.last_ckpt if self.last_ckpt is not None else 'none'}"
            )
        self.last_ckpt = self.ckpt.save(step, (self.params, self.rest, self.opt_state), self.meta)
        self.last_ckpt_step = step
        self.timer.exclude(time.perf_counter() - t_save)  # nor is saving

    def after_step(self, step: int) -> None:
        """Log, evaluate and checkpoint as the intervals say."""
        tc = self.tc
        record = self.log_record(step) if step % tc.log_interval == 0 or step == tc.steps else None
        if step % tc.eval_interval == 0 or step == tc.steps:
            record = self.evaluate(step, record)
        if record is not None:
            self.emit(record)
        if self.ckpt is not None and tc.ckpt_interval and step % tc.ckpt_interval == 0:
            self.save(step)

    def summary(self, step: int, seconds: float, interrupted: str | None) -> dict:
        """What train() returns."""
        evals = [r for r in self.history if "val_loss" in r]
        return {
            "steps": step,
            "start_step": self.start,
            "losses": [self.losses[s] for s in sorted(self.losses)],
            "loss_steps": sorted(self.losses),
            "train_loss": evals[-1]["train_loss"] if evals else None,
            "val_loss": evals[-1]["val_loss"] if evals else None,
            "tokens_per_s": self.timer.overall(),
            "seconds": seconds,
            "history": self.history,
            "interrupted": interrupted,
            "checkpoint": str(self.last_ckpt) if self.last_ckpt is not None else None,
        }


def train(
    model: Decoder,
    data: TokenData,
    tc: TrainConfig,
    *,
    block_size: int | None = None,
    on_log: Callable[[dict], None] | None = None,
    progress: bool = True,
    checkpoint_dir: str | pathlib.Path | None = None,
    resume: bool | int = False,
    metrics_path: str | pathlib.Path | None = None,
    meta: dict | None = None,
    mesh=None,
    sample_fn: Callable[[Decoder], str] | None = None,
    handle_signals: bool = True,
    print_fn: Callable[[str], None] | None = None,
) -> dict:
    """Train `model` in place on `data`; returns a summary (final losses, per-step losses,
    tokens/s, history, interrupted, last checkpoint).

    checkpoint_dir: orbax checkpoints every tc.ckpt_interval steps, at the end and on
    SIGINT/SIGTERM (then the loop stops after the current step and the summary says
    interrupted). resume: True (latest checkpoint; step 0 when there is none yet) or a step:
    continue from it so the loss sequence equals an uninterrupted run's; checkpoints after that
    step are deleted first (docs/training.md, resume rules). metrics_path: one JSON record per
    log/eval step (on resume, records after the checkpoint are dropped first). meta: extra JSON
    stored in checkpoints and compared on resume (e.g. data_fingerprint). mesh: a
    jax.sharding.Mesh with axes (data, fsdp), possibly over the devices of several processes:
    then every process calls train() alike, reads only its rows of each batch and writes its
    checkpoint shards; only process 0 prints (pass metrics_path there only); the model ends with
    host-local copies of the weights, gathered from all processes. sample_fn(model) -> text
    printed at each evaluation.
    """
    from physnets_jax.training.checkpoint import Checkpointer
    from physnets_jax.training.sharding import any_process, check_batch, is_main_process, to_local

    block_size = block_size or model.cfg.block_size
    check_batch(mesh, tc.batch_size, "batch_size")
    if mesh is None and jax.process_count() > 1:
        raise ValueError(f"this is one of {jax.process_count()} processes: pass a mesh over all their devices "
                         "(e.g. make_mesh('data:-1')), or every process would train a model of its own")
    main = is_main_process()
    multiprocess = mesh is not None and jax.process_count() > 1
    tx = _cached_optimizer(tc)  # the same object for equal configs: the jitted step is reused
    model.train()
    graphdef, *state = _initial_state(model, tx, mesh)
    names = param_names(state[0])
    meta = {**(meta or {}), "model_config": model.cfg.to_dict(), "train_config": tc.to_dict(),
            "param_names": names, "n_params_leaves": len(names)}
    say = print_fn or (lambda message: print(message, flush=True))
    if not main:
        say = lambda message: None  # noqa: E731  (process 0 speaks for the run)
    ckpt = Checkpointer(checkpoint_dir, keep=tc.keep_checkpoints) if checkpoint_dir is not None else None
    metrics_file = bar = None
    try:
        start = 0
        if resume is not False and resume is not None:
            if ckpt is None:
                raise ValueError("resume needs checkpoint_dir")
            state, start = _restore(ckpt, resume, tuple(state), meta, tc, say)
        if metrics_path is not None:
            metrics_path = pathlib.Path(metrics_path)
            truncate_metrics(metrics_path, start, say)
            metrics_file = open(metrics_path, "a", encoding="utf-8")
        loop = _Loop(graphdef=graphdef, state=state, tx=tx, tc=tc, data=data, block_size=block_size, mesh=mesh,
                     ckpt=ckpt, meta=meta, start=start, metrics_file=metrics_file, on_log=on_log,
                     sample_fn=sample_fn, say=say)
        t_start = time.perf_counter()
        interrupted, step = None, start
        with _StopFlag(handle_signals) as stop:
            for step in range(start + 1, tc.steps + 1):
                loop.step(step)
                new_bar = progress and bar is None
                if new_bar:  # made after the compiling first step, so its rate and ETA leave compilation out
                    from tqdm.auto import tqdm

                    bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
                    if main:
                        loop.say = print_fn or bar.write
                loop.after_step(step)
                if bar is not None:
                    if not new_bar:
                        bar.update(1)
                    if loop.history and loop.history[-1]["step"] == step and "loss" in loop.history[-1]:
                        rate = loop.history[-1]["tokens_per_s"]
                        bar.set_postfix(loss=f"{loop.losses[step]:.4f}", tok_s=f"{rate:,.0f}" if rate else "-")
                if multiprocess:
                    # every process must stop after the same step: the flags are compared at log and
                    # checkpoint steps (a collective), so a signal takes effect at the next of those
                    if step % tc.log_interval == 0 or (tc.ckpt_interval and step % tc.ckpt_interval == 0):
                        if any_process(stop.signum is not None):
                            interrupted = (signal.Signals(stop.signum).name if stop.signum is not None
                                           else "a signal to another process")
                            break
                elif stop.signum is not None:
                    interrupted = signal.Signals(stop.signum).name
                    break
            loop.flush_losses()
            if ckpt is not None and loop.last_ckpt_step != step:
                loop.save(step)
        loop.timer.close_window()
        elapsed = time.perf_counter() - t_start
    finally:
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if ckpt is not None:
            ckpt.close()
    nnx.update(model, *to_local((loop.params, loop.rest)))
    model.eval()
    return loop.summary(step, elapsed, interrupted)
