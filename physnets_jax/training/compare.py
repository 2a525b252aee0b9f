"""Fair comparisons of presets: matched parameter count, matched tokens, same data, tokenizer and
schedule, several seeds (`python benchmarks/compare.py`, `physnets compare`).

A suite is a list of entries (label, preset, config overrides, optimizer, loss). For every entry
the width n_embd (a multiple of n_head) is chosen so that its parameter count is closest to the
suite's target (the first entry's count at the scale's base width); an entry that cannot get
within `tolerance` (5%) raises a ValueError naming it. Every entry then trains for the same number
of steps of the same batch and block size (same tokens seen) with the same learning-rate schedule,
once per seed, through `physnets_jax.training.train.train`. Results: a markdown table (mean +- std over
seeds of the final validation loss and perplexity, tokens/s, parameters), `results.json`, and PNG
plots (validation-loss curves with a +-1 std band over seeds; validation loss by evaluation length
for the extrapolation suite) in the output folder.

Learning-rate sweep (run_suite's lr_grid; default for SWEEP_SUITES): before its seeds, each entry
trains at every rate of the grid for scale.sweep_fraction of the budget on the first 90% of the
training split; the rate with the lowest loss on the last 10% of the training split (the selection
split, selection_split) is used for all seeds, so the reported validation split plays no part in the
choice. When that rate is the grid's smallest or largest, the sweep tries rates past the edge
(sweep_rates, up to LR_EXTEND more) until the best rate has a worse neighbour on both sides. Every finished run is saved as one JSON file (RunStore) as soon as it ends; a suite run
again on the same folder reuses them (`--resume`). Scales with report_fractions (small-cpu) also
report the validation loss at those fractions of the budget, with ranks, in the table.

The `wave-headline` suite is the exception on purpose: it replays the Wave-Native GPT headline
run's own protocol (HEADLINE below: no parameter matching, the wave model trained 3x the steps
at 2x the learning rate with RGD + QFE) and reports the seed's "validation" (one random batch of
the training split) next to the held-out validation, so the protocol's share of the claimed gain
can be read off.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from physnets_core.folders import write_text_atomic

SUITES = ("seeds", "wave-ablation", "residual", "extrapolation", "wave-headline")
SWEEP_SUITES = ("seeds", "residual")  # suites whose entries get a learning-rate sweep unless --no-lr-sweep
SELECT_FRACTION = 0.1  # the sweep's selection split: this last fraction of the training split
LR_EXTEND = 2  # a sweep whose best rate is at the grid's edge may add this many rates past it
RUNS_DIR = "runs"  # finished runs of a suite, one JSON each (RunStore)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Model and budget settings shared by every entry of a suite at one scale."""

    n_layer: int
    n_head: int
    base_width: int  # the first entry's n_embd; the others are matched to its parameter count
    block_size: int
    batch_size: int
    steps: int
    lr: float
    warmup_steps: int
    eval_interval: int
    eval_batches: int
    eval_lengths: tuple[int, ...]  # extrapolation suite: block_size x 1, 2, 4, 8
    report_fractions: tuple[float, ...] = ()  # table columns: validation loss at these fractions of the budget
    sweep_fraction: float = 0.25  # learning-rate sweep: each rate trains this fraction of `steps`


SCALES = {
    # 2-core CPU: the whole `seeds` suite (5 entries x 3 seeds) in well under 30 minutes.
    "tiny": Scale(n_layer=2, n_head=4, base_width=96, block_size=64, batch_size=16, steps=500, lr=2e-3,
                  warmup_steps=40, eval_interval=50, eval_batches=8, eval_lengths=(64, 128, 256, 512)),
    # 2-core CPU, longer: 3x tiny's tokens (768 steps of 16 x 128 = 1.57M) on 4 layers x 128, with
    # validation loss reported at 1/8, 1/4, 1/2 and all of the budget. Sized from measured quiet-machine
    # throughput (5,100-7,900 tokens/s per entry, ~25 s of compilation and evaluation per run): the
    # `seeds` suite with its sweep (3 rates, + 1 past an edge, of 1/8 of the budget, centred on lr
    # 4e-3) and 3 seeds is ~5 x 3.45 budgets of 1.57M tokens plus ~35 runs' overhead, ~90 minutes.
    "small-cpu": Scale(n_layer=4, n_head=4, base_width=128, block_size=128, batch_size=16, steps=768, lr=4e-3,
                       warmup_steps=40, eval_interval=32, eval_batches=4, eval_lengths=(128, 256, 512, 1024),
                       report_fractions=(1 / 8, 1 / 4, 1 / 2), sweep_fraction=1 / 8),
    # The seeds' own sizes (RippleGPT / nanoGPT 6 x 384, context 256): for an accelerator.
    "seed": Scale(n_layer=6, n_head=6, base_width=384, block_size=256, batch_size=64, steps=5000, lr=1e-3,
                  warmup_steps=100, eval_interval=250, eval_batches=20, eval_lengths=(256, 512, 1024, 2048)),
}


@dataclasses.dataclass(frozen=True)
class Entry:
    """One model + optimisation setting of a suite (steps_factor and lr: wave-headline only)."""

    label: str
    preset: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: str = "adamw"
    loss: str = "ce"
    steps_factor: int = 1  # trains steps_factor x the scale's steps
    lr: float | None = None  # None: the scale's


# The Wave-Native GPT headline run's protocol (spectral_cnn c04e261/38a89ad: wave_benchmark.py and
# benchmark_results/benchmark_config.json): the classic control 5,000 steps of AdamW + CE at 3e-4,
# the wave model 15,000 steps of RGD + QFE at 6e-4; batch 32, block 256, linear warmup 300 steps
# then cosine to 0, weight decay 0.01, betas (0.9, 0.999), clipping 1.0, dropout 0.1; RGD strength
# 0.3 over a 500-step resonance warmup; QFE lambda 0.05, threshold 0.01, unprojected; both models
# with a 1024-row vocabulary and no parameter matching. Its "val loss" is the cross-entropy of ONE
# random batch of the training split (eval mode), taken after training.
HEADLINE = dict(classic_steps=5000, warmup_steps=300, rgd_warmup=500, classic_lr=3e-4, wave_lr=6e-4,
                weight_decay=0.01, beta2=0.999, rgd_strength=0.3, qfe_lambda=0.05, dropout=0.1, vocab_size=1024)
SEED_VAL_STREAM = 2  # batch_rng stream of the seed-style "validation" batch (training 0, evaluation 1)


def suite_entries(suite: str) -> list[Entry]:
    """The entries of a named suite (ValueError lists the valid names)."""
    if suite == "seeds":
        return [
            Entry("gpt", "gpt"),
            Entry("ripplegpt", "ripplegpt"),
            Entry("wave_gpt", "wave_gpt"),
            Entry("gateloop", "gateloop"),
            Entry("hybrid", "gateloop", {"mixer": "hybrid"}),
        ]
    if suite == "wave-ablation":
        pure = {"wave.attention": "pure"}
        return [
            Entry("baseline (AdamW + CE)", "wave_gpt"),
            Entry("rgd_only (RGD + CE)", "wave_gpt", optimizer="rgd"),
            Entry("qfe_only (AdamW + QFE)", "wave_gpt", loss="qfe"),
            Entry("full_physics (RGD + QFE)", "wave_gpt", optimizer="rgd", loss="qfe"),
            *[Entry(f"pure_wave {k}", "wave_gpt", {**pure, "wave.kernel": k}) for k in ("elu1", "sigmoid", "exp")],
            Entry("pure_wave linear (elu1, O(T))", "wave_gpt", {**pure, "wave.mode": "linear"}),
        ]
    if suite == "residual":
        op = {"residual": "orthogonal_parallel"}
        return [
            Entry("gpt add", "gpt"),
            Entry("gpt orthogonal_parallel", "gpt", op),
            Entry("ripplegpt add", "ripplegpt"),
            Entry("ripplegpt orthogonal_parallel", "ripplegpt", op),
        ]
    if suite == "extrapolation":
        return [
            Entry("gpt", "gpt"),
            Entry("ripplegpt", "ripplegpt"),
            Entry("gateloop", "gateloop"),
            Entry("wave_gpt", "wave_gpt"),
        ]
    if suite == "wave-headline":
        classic_lr, wave_lr = HEADLINE["classic_lr"], HEADLINE["wave_lr"]
        return [
            Entry("classic: N steps, AdamW + CE (the seed's control)", "classic", lr=classic_lr),
            Entry("wave_gpt-headline: 3N steps, RGD + QFE (the seed's wave run)", "wave_gpt-headline",
                  optimizer="rgd", loss="qfe", steps_factor=3, lr=wave_lr),
            Entry("wave_gpt-headline: N steps, AdamW + CE (the control's protocol)", "wave_gpt-headline",
                  lr=classic_lr),
            Entry("classic: 3N steps, AdamW + CE at the wave run's lr", "classic", steps_factor=3, lr=wave_lr),
        ]
    raise ValueError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")


def entry_config(entry: Entry, scale: Scale, vocab_size: int, n_embd: int):
    """The ModelConfig of an entry at a width (dropout 0: short runs, equal for all)."""
    from physnets_core.config import preset

    fields = dict(vocab_size=vocab_size, n_layer=scale.n_layer, n_head=scale.n_head, n_embd=n_embd,
                  block_size=scale.block_size, dropout=0.0)
    return preset(entry.preset, "nano", **{**fields, **entry.overrides})


def headline_config(entry: Entry, scale: Scale, vocab_size: int):
    """wave-headline: the entry at the scale's base width, unmatched (the seed compared 15.08M with
    15.43M), with the seed run's dropout and, for wave models, its waves per head ratio (H W = d)."""
    from physnets_core.config import preset

    fields = dict(vocab_size=vocab_size, n_layer=scale.n_layer, n_head=scale.n_head, n_embd=scale.base_width,
                  block_size=scale.block_size, dropout=HEADLINE["dropout"], **entry.overrides)
    if preset(entry.preset, "nano").embedding == "wave":
        fields["wave.n_waves"] = scale.base_width // scale.n_head
    return preset(entry.preset, "nano", **fields)


def headline_train_config(entry: Entry, scale: Scale, seed: int):
    """wave-headline: the seed run's optimisation settings (HEADLINE) for an entry, its absolute step
    counts (warmup 300, resonance warmup 500) scaled by scale.steps / 5,000 like its run lengths."""
    from physnets_jax.training.train import TrainConfig

    factor = scale.steps / HEADLINE["classic_steps"]
    steps = scale.steps * entry.steps_factor
    return TrainConfig(
        steps=steps, batch_size=scale.batch_size, lr=entry.lr or scale.lr, min_lr_ratio=0.0,
        warmup_steps=min(round(HEADLINE["warmup_steps"] * factor), steps - 1),
        weight_decay=HEADLINE["weight_decay"], beta2=HEADLINE["beta2"], grad_clip=1.0,
        optimizer=entry.optimizer, loss=entry.loss, qfe_lambda=HEADLINE["qfe_lambda"], qfe_project=False,
        rgd_strength=HEADLINE["rgd_strength"], rgd_warmup=max(1, round(HEADLINE["rgd_warmup"] * factor)),
        eval_interval=min(scale.eval_interval, steps), eval_batches=scale.eval_batches,
        log_interval=min(10, steps), seed=seed,
    )


def seed_style_val_loss(model, data, batch_size: int, block_size: int, seed: int) -> float:
    """The seed's "val loss": cross-entropy (eval mode) of ONE random batch of the TRAINING split."""
    from flax import nnx

    from physnets_jax.training.train import eval_loss

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, y = data.batch_at("train", batch_size, block_size, seed, 0, SEED_VAL_STREAM)
    return float(eval_loss(graphdef, params, rest, x, y))


@functools.lru_cache(maxsize=1024)
def param_count(cfg) -> int:
    """Parameters of a Decoder built from cfg (shapes only, nothing allocated; cached per config:
    entries of a suite that differ only in optimiser or loss share their width search)."""
    from flax import nnx

    from physnets_jax.model import Decoder, count_params

    return count_params(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0))))


def match_width(entry: Entry, scale: Scale, vocab_size: int, target: int, tolerance: float = 0.05):
    """(cfg, params) of the entry at the n_embd (multiple of n_head) whose count is closest to target."""
    step = scale.n_head
    counts: dict[int, tuple[Any, int]] = {}

    def at(k: int):  # (cfg, count) at n_embd = k * step; counts grow with the width
        if k not in counts:
            cfg = entry_config(entry, scale, vocab_size, k * step)
            counts[k] = (cfg, param_count(cfg))
        return counts[k]

    lo, hi = 1, 8 * max(scale.base_width // step, 1)
    while lo < hi:  # smallest k whose count reaches the target
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if at(mid)[1] < target else (lo, mid)
    best = min((at(k) for k in {max(lo - 1, 1), lo}), key=lambda cc: abs(cc[1] - target))
    cfg, count = best
    if abs(count - target) > tolerance * target:
        raise ValueError(
            f"entry {entry.label!r} cannot be matched to {target:,} parameters within {tolerance:.0%}: "
            f"closest is n_embd={cfg.n_embd} with {count:,}"
        )
    return cfg, count


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def default_lr_grid(lr: float) -> tuple[float, ...]:
    """The sweep's default grid: half, one and two times the scale's rate (a log grid, factor 2)."""
    return (lr / 2, lr, lr * 2)


def check_lr_grid(grid: Sequence[float]) -> tuple[float, ...]:
    """The grid sorted ascending; ValueError when it has fewer than 2 distinct values or a rate
    that is not a positive finite number."""
    values = [float(v) for v in grid]
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"lr grid {','.join(f'{v:g}' for v in values)}: learning rate {bad[0]:g} must be a "
                         "positive finite number")
    if len(set(values)) < 2:
        raise ValueError(f"lr grid {','.join(f'{v:g}' for v in values)} has {len(set(values))} distinct "
                         "value(s); a sweep needs at least 2 learning rates")
    return tuple(sorted(set(values)))


def check_lr_extend(lr_extend) -> int:
    """lr_extend itself; ValueError unless it is an int >= 0."""
    if isinstance(lr_extend, bool) or not isinstance(lr_extend, int) or lr_extend < 0:
        raise ValueError(f"lr_extend {lr_extend!r}: the number of rates a sweep may add past the grid's edge "
                         "must be an integer >= 0")
    return lr_extend


def _sweep_score(record: dict) -> tuple[float, float]:
    """Sort key of a sweep run: its selection loss (diverged: infinite), then the smaller rate."""
    loss = record["val_loss"]
    return (math.inf if loss is None else loss, record["lr"])


def sweep_rates(grid: Sequence[float], train: Callable[[float], dict], lr_extend: int) -> tuple[list[dict], list[float]]:
    """Train every rate of `grid` (ascending, from check_lr_grid) with `train(rate) -> record`;
    while the best record (lowest val_loss, ties to the smaller rate) sits at the smallest or the
    largest rate tried, train one more rate past that edge (the edge divided or multiplied by the
    ratio of the two rates at that end), at most `lr_extend` times. Returns (the records sorted by
    rate, the rates added), or ([], []) when every rate of the grid diverged."""
    records = {rate: train(rate) for rate in grid}
    added: list[float] = []
    if all(r["val_loss"] is None for r in records.values()):
        return [], []
    while len(added) < lr_extend:
        rates = sorted(records)
        best = min(records.values(), key=_sweep_score)["lr"]
        if best == rates[-1]:
            rate = rates[-1] * (rates[-1] / rates[-2])
        elif best == rates[0]:
            rate = rates[0] / (rates[1] / rates[0])
        else:
            break
        rate = float(f"{rate:.6g}")  # 4e-3 * 2 prints and stores as 0.008, not 0.008000000000000002
        records[rate] = train(rate)
        added.append(rate)
    return [records[rate] for rate in sorted(records)], added


def selection_split(data, fraction: float = SELECT_FRACTION):
    """The sweep's data: a TokenData whose train split is the first 1 - fraction of `data`'s
    training tokens and whose val split (the selection split) is the last `fraction` of them.
    The reported validation split (`data.val`) is never read, so the rate is not chosen on it."""
    from physnets_jax.training.data import TokenData

    n = len(data.train)
    k = int(n * fraction)
    if k < 2 or n - k < 2:
        raise ValueError(f"the training split has {n} tokens, too few to hold out {fraction:.0%} for the "
                         "learning-rate sweep's selection split")
    return TokenData.from_splits(data.train[: n - k], data.train[n - k:])


def resolve_scale(scale: str | Scale, steps: int | None = None) -> Scale:
    """The Scale named `scale` (ValueError lists the valid names), with `steps` overriding its
    budget (evaluation interval and warmup capped to it)."""
    if isinstance(scale, str):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; valid scales: {', '.join(SCALES)}")
        sc = SCALES[scale]
    else:
        sc = scale
    if steps is not None:
        interval = max(1, steps // 16) if sc.report_fractions else min(sc.eval_interval, steps)
        sc = dataclasses.replace(sc, steps=steps, eval_interval=interval, warmup_steps=min(sc.warmup_steps, steps))
    return sc


def suite_train_config(entry: Entry, sc: Scale, seed: int, lr: float, steps: int):
    """The TrainConfig every non-headline entry trains with (same schedule shape for all entries;
    the warmup is the scale's in absolute steps, so a short sweep run starts like the full run)."""
    from physnets_jax.training.train import TrainConfig

    return TrainConfig(
        steps=steps, batch_size=sc.batch_size, lr=lr, warmup_steps=min(sc.warmup_steps, steps),
        optimizer=entry.optimizer, loss=entry.loss, eval_interval=min(sc.eval_interval, steps),
        eval_batches=sc.eval_batches, log_interval=min(10, steps), seed=seed,
        weight_decay=0.01 if entry.optimizer == "rgd" else 0.1,
        rgd_strength=0.3, rgd_warmup=min(500, sc.steps),
    )


def train_run(cfg, data, tc, *, extras: Callable[[Any], dict] | None = None, allow_divergence: bool = False) -> dict:
    """Train a fresh model of `cfg` (seeded by tc.seed) on `data` with `tc`; returns its record:
    final val (of `data.val`) and train loss, tokens/s, seconds, the val curve [(step, loss)] and
    whatever `extras(model)` adds. With allow_divergence a run whose loss became non-finite gives
    val_loss None and the reason under "diverged" instead of raising TrainingDiverged."""
    from physnets_jax.model import build_model
    from physnets_jax.training.train import TrainingDiverged, train

    model = build_model(cfg, seed=tc.seed)
    t0 = time.perf_counter()
    record: dict[str, Any] = {"seed": tc.seed, "lr": tc.lr, "steps": tc.steps}
    try:
        summary = train(model, data, tc, progress=False, handle_signals=False, print_fn=lambda _s: None)
    except TrainingDiverged as err:
        if not allow_divergence:
            raise
        return {**record, "val_loss": None, "train_loss": None, "diverged": str(err), "tokens_per_s": None,
                "seconds": time.perf_counter() - t0, "val_curve": []}
    record.update({
        "val_loss": summary["val_loss"], "train_loss": summary["train_loss"],
        "tokens_per_s": summary["tokens_per_s"], "seconds": time.perf_counter() - t0,
        "val_curve": [[h["step"], h["val_loss"]] for h in summary["history"] if "val_loss" in h],
    })
    if extras is not None:
        record.update(extras(model))
    return record


class RunStore:
    """Finished runs of a suite, one JSON file per (entry, kind, lr, seed) under `folder`/runs/,
    each written atomically (temporary file + rename) as soon as its run ends; a later call with
    the same key reads it back instead of training (what --resume relies on). folder None: nothing
    is stored or read."""

    def __init__(self, folder: pathlib.Path | None):
        self.folder = None if folder is None else pathlib.Path(folder) / RUNS_DIR
        self.trained = 0
        self.reused = 0

    def path(self, index: int, label: str, kind: str, lr: float, seed: int) -> pathlib.Path | None:
        """The file of one run (None without a folder)."""
        if self.folder is None:
            return None
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in label).strip("-")[:60]
        return self.folder / f"{index:02d}-{slug}" / f"{kind}-lr{lr:.6g}-seed{seed}.json"

    def run(self, path: pathlib.Path | None, fn: Callable[[], dict]) -> dict:
        """The stored record at `path`, or fn()'s, stored there atomically."""
        if path is not None and path.is_file():
            self.reused += 1
            return json.loads(path.read_text(encoding="utf-8"))
        record = fn()
        self.trained += 1
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, json.dumps(record, indent=1) + "\n")
        return record


def suite_settings(suite: str, scale_name: str, sc: Scale, seeds: Sequence[int], lr_grid: Sequence[float] | None,
                   tokenizer: str, vocab_size: int, data: str, data_fingerprint: str, lr_extend: int = LR_EXTEND) -> dict:
    """What a suite's results depend on, stored as suite.json when it starts; --resume refuses a
    folder whose settings differ (check_resume_settings)."""
    return json.loads(json.dumps({
        "suite": suite, "scale": scale_name, "scale_settings": dataclasses.asdict(sc), "seeds": list(seeds),
        "lr_sweep": lr_grid is not None, "lr_grid": None if lr_grid is None else list(lr_grid),
        "lr_extend": None if lr_grid is None else lr_extend, "tokenizer": tokenizer, "vocab_size": vocab_size, "data": data, "data_fingerprint": data_fingerprint,
    }))


def check_resume_settings(stored: dict, current: dict, folder) -> None:
    """ValueError naming the first setting (and both values) in which `current` differs from the
    settings `stored` in the results folder being resumed."""
    names = {"steps": "steps"}

    def fail(name, old, new):
        raise ValueError(f"--resume: {folder} was made with {name}={old}, this command has {name}={new}; "
                         "rerun with the folder's settings or choose another --out")

    for key in ("suite", "scale", "seeds", "lr_sweep", "lr_grid", "lr_extend", "tokenizer", "vocab_size"):
        if stored.get(key) != current.get(key):
            fail(key, json.dumps(stored.get(key)), json.dumps(current.get(key)))
    old_sc, new_sc = stored.get("scale_settings", {}), current["scale_settings"]
    for key in new_sc:
        if old_sc.get(key) != new_sc[key]:
            fail(names.get(key, f"scale.{key}"), json.dumps(old_sc.get(key)), json.dumps(new_sc[key]))
    if stored.get("data_fingerprint") != current.get("data_fingerprint"):
        fail("data", f"{stored.get('data')} (content {str(stored.get('data_fingerprint'))[:12]})",
             f"{current.get('data')} (content {str(current.get('data_fingerprint'))[:12]})")


def run_suite(
    suite: str,
    *,
    scale: str | Scale = "tiny",
    seeds: Sequence[int] = (0, 1, 2),
    data,
    vocab_size: int,
    tokenizer_name: str = "char",
    steps: int | None = None,
    lr_grid: Sequence[float] | None = None,
    lr_extend: int = LR_EXTEND,
    folder: pathlib.Path | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Train every entry of `suite` once per seed on `data` (a physnets_jax.training.data.TokenData whose
    tokenizer has `vocab_size` ids); returns the result dict that format_table / write_result take.

    lr_grid: the learning-rate sweep. Each entry first trains at every rate of the grid for
    scale.sweep_fraction of the budget (seed seeds[0]) on the first 90% of the training split,
    scored by the final loss on its last 10% (selection_split; the reported val split is not
    read); the rate with the lowest score (ties: the smaller rate; diverged runs lose) is then
    used for every seed. lr_extend: when the best rate is the grid's smallest or largest, the grid
    grows past that edge by its own end ratio, up to this many extra rates (sweep_rates), so the
    chosen rate is bracketed. folder: finished runs are stored there (RunStore) and reused."""
    sc = resolve_scale(scale, steps)
    entries = suite_entries(suite)
    headline = suite == "wave-headline"
    if lr_grid is not None:
        if headline:
            raise ValueError("the wave-headline suite replays the seed runs' own learning rates; "
                             "it takes no learning-rate sweep")
        lr_grid = check_lr_grid(lr_grid)
    check_lr_extend(lr_extend)
    store = RunStore(folder)
    select_data = selection_split(data) if lr_grid is not None else None
    sweep_steps = max(1, round(sc.steps * sc.sweep_fraction))
    vocab = max(vocab_size, HEADLINE["vocab_size"]) if headline else vocab_size  # the seed's 1024 rows
    if headline:
        target = param_count(headline_config(entries[0], sc, vocab))
    else:
        target = param_count(entry_config(entries[0], sc, vocab, sc.base_width))
    rows = []
    for index, entry in enumerate(entries):
        if headline:
            cfg = headline_config(entry, sc, vocab)
            count = param_count(cfg)
        else:
            cfg, count = match_width(entry, sc, vocab, target)
        log(f"{entry.label}: n_embd {cfg.n_embd}, {count:,} parameters ({count / target - 1:+.1%} vs target {target:,})")
        lr = entry.lr or sc.lr
        sweep = None
        if lr_grid is not None:
            def sweep_run(rate, cfg=cfg, entry=entry, index=index):
                tc = suite_train_config(entry, sc, seeds[0], rate, sweep_steps)
                rec = store.run(store.path(index, entry.label, "sweep", rate, seeds[0]),
                                functools.partial(train_run, cfg, select_data, tc, allow_divergence=True))
                shown = "diverged" if rec["val_loss"] is None else f"{rec['val_loss']:.4f}"
                log(f"  sweep lr {rate:g}: selection loss {shown} after {sweep_steps} steps, {rec['seconds']:.0f} s")
                return rec

            runs, added = sweep_rates(lr_grid, sweep_run, lr_extend)
            if not runs:
                raise ValueError(f"entry {entry.label!r}: every rate of the sweep diverged "
                                 f"({', '.join(f'{v:g}' for v in lr_grid)}); try smaller rates with --lr-grid")
            lr = min(runs, key=_sweep_score)["lr"]
            sweep = {"grid": list(lr_grid), "extended": added, "steps": sweep_steps, "seed": seeds[0], "chosen_lr": lr,
                     "selection": f"last {SELECT_FRACTION:.0%} of the training split (not the reported val split)",
                     "runs": [{"lr": r["lr"], "selection_loss": r["val_loss"], "curve": r["val_curve"],
                               **({"diverged": r["diverged"]} if "diverged" in r else {})} for r in runs]}
            log(f"  chosen lr {lr:g}" + (f" (grid extended by {', '.join(f'{v:g}' for v in added)})" if added else ""))
        per_seed = []
        for seed in seeds:
            tc = headline_train_config(entry, sc, seed) if headline else suite_train_config(entry, sc, seed, lr, sc.steps)

            def extras(model, seed=seed):
                out = {}
                if suite == "extrapolation":
                    from physnets_jax.training.train import length_eval

                    out["lengths"] = length_eval(model, data, sc.eval_lengths, batch_size=8,
                                                 batches=sc.eval_batches, seed=seed)
                if headline:
                    out["seed_val_loss"] = seed_style_val_loss(model, data, sc.batch_size, sc.block_size, seed)
                return out

            record = store.run(store.path(index, entry.label, "final", tc.lr, seed),
                               functools.partial(train_run, cfg, data, tc, extras=extras))
            per_seed.append(record)
            extra = f", seed-style val {record['seed_val_loss']:.4f}" if headline else ""
            log(f"  seed {seed}: val {record['val_loss']:.4f}{extra}, {record['tokens_per_s']:,.0f} tokens/s, "
                f"{record['seconds']:.0f} s")
        val_mean, val_std = _mean_std([r["val_loss"] for r in per_seed])
        tps_mean, _ = _mean_std([r["tokens_per_s"] for r in per_seed])
        row = {"label": entry.label, "preset": entry.preset, "overrides": entry.overrides,
               "optimizer": entry.optimizer, "loss": entry.loss, "n_embd": cfg.n_embd, "params": count,
               "lr": lr, "lr_sweep": sweep,
               "val_loss_mean": val_mean, "val_loss_std": val_std, "ppl_mean": float(np.mean(
                   [math.exp(r["val_loss"]) for r in per_seed])), "tokens_per_s": tps_mean,
               "extrapolates": cfg.extrapolates, "seeds": per_seed,
               "checkpoints": _checkpoint_summary(per_seed, sc)}
        if suite == "extrapolation":
            row["lengths"] = _length_summary(per_seed)
        if headline:
            row["steps"], row["lr"] = tc.steps, tc.lr
            row["seed_val_loss_mean"], row["seed_val_loss_std"] = _mean_std([r["seed_val_loss"] for r in per_seed])
        rows.append(row)
    return {"suite": suite, "scale": dataclasses.asdict(sc), "tokenizer": tokenizer_name, "vocab_size": vocab,
            "target_params": target, "seeds": list(seeds), "lr_sweep": lr_grid is not None,
            "runs_trained": store.trained, "runs_reused": store.reused, "rows": rows}


def _checkpoint_summary(per_seed: list[dict], sc: Scale) -> list[dict]:
    """Validation loss (mean, std over seeds) at the evaluation step nearest to each of the scale's
    report fractions of the budget, then at the end."""
    steps = [s for s, _ in per_seed[0]["val_curve"]]
    out = []
    for fraction in (*sc.report_fractions, 1.0):
        step = min(steps, key=lambda s: abs(s - fraction * sc.steps)) if fraction < 1 else steps[-1]
        vals = [dict((int(s), v) for s, v in r["val_curve"])[step] for r in per_seed]
        mean, std = _mean_std(vals)
        out.append({"fraction": fraction, "step": step, "val_loss_mean": mean, "val_loss_std": std})
    return out


def _length_summary(per_seed: list[dict]) -> list[dict]:
    out = []
    for i, first in enumerate(per_seed[0]["lengths"]):
        if "val_loss" in first:
            mean, std = _mean_std([r["lengths"][i]["val_loss"] for r in per_seed])
            out.append({"length": first["length"], "val_loss_mean": mean, "val_loss_std": std})
        else:
            out.append({"length": first["length"], "note": first["note"]})
    return out


def format_table(result: dict) -> str:
    """Markdown table of a suite result (plus the length table for the extrapolation suite)."""
    n = len(result["seeds"])
    if result["suite"] == "wave-headline":
        return _format_headline_table(result)
    rows = result["rows"]
    marks = [c for c in rows[0].get("checkpoints", [])]
    show_ranks = len(marks) > 1
    ranks = [_ranks([r["checkpoints"][i]["val_loss_mean"] for r in rows]) for i in range(len(marks))] if show_ranks else []
    heads = [f"val @ {_fraction_text(c['fraction'])} (step {c['step']})" for c in marks[:-1]]
    rank_note = ", rank" if show_ranks else ""
    lr_head = "lr (swept)" if result.get("lr_sweep") else "lr"
    lines = [
        f"| entry | params | n_embd | optimizer | loss | {lr_head} | " + "".join(f"{h} | " for h in heads)
        + f"val loss (mean +- std, {n} seeds{rank_note}) | perplexity | tokens/s |",
        "|---|---:|---:|---|---|---:|" + "---:|" * len(heads) + "---:|---:|---:|",
    ]
    for j, r in enumerate(rows):
        cells = []
        for i, c in enumerate(r.get("checkpoints", [])[:-1]):
            cells.append(f"{c['val_loss_mean']:.4f} +- {c['val_loss_std']:.4f} ({ranks[i][j]})")
        final = f"{r['val_loss_mean']:.4f} +- {r['val_loss_std']:.4f}" + (f" ({ranks[-1][j]})" if show_ranks else "")
        lr = r.get("lr", result["scale"]["lr"])
        lines.append(
            f"| {r['label']} | {r['params']:,} | {r['n_embd']} | {r['optimizer']} | {r['loss']} | {lr:g} | "
            + "".join(f"{c} | " for c in cells)
            + f"{final} | {r['ppl_mean']:.2f} | {r['tokens_per_s']:,.0f} |"
        )
    if result["suite"] == "extrapolation":
        lengths = [x["length"] for x in result["rows"][0]["lengths"]]
        block = result["scale"]["block_size"]
        lines += ["", "| entry | " + " | ".join(f"val loss @ {L}{' (train)' if L == block else ''}" for L in lengths)
                  + " |", "|---|" + "---:|" * len(lengths)]
        for r in result["rows"]:
            cells = [f"{x['val_loss_mean']:.4f} +- {x['val_loss_std']:.4f}" if "val_loss_mean" in x
                     else "cannot extrapolate" for x in r["lengths"]]
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ranks(values: Sequence[float]) -> list[int]:
    """1 for the smallest value, 2 for the next, ... (ties share the better rank)."""
    return [1 + sum(w < v for w in values) for v in values]


def _fraction_text(fraction: float) -> str:
    from fractions import Fraction

    f = Fraction(fraction).limit_denominator(64)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def _format_headline_table(result: dict) -> str:
    n = len(result["seeds"])
    lines = [
        f"| entry | params | steps | optimizer + loss | lr | seed's \"val\" (1 training batch, {n} seeds) | "
        f"held-out val ({n} seeds) | held-out ppl | tokens/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {r['params']:,} | {r['steps']:,} | {r['optimizer']} + {r['loss']} | {r['lr']:g} | "
            f"{r['seed_val_loss_mean']:.4f} +- {r['seed_val_loss_std']:.4f} | "
            f"{r['val_loss_mean']:.4f} +- {r['val_loss_std']:.4f} | {r['ppl_mean']:.2f} | {r['tokens_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def plot_result(result: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """PNG plots of a suite result: validation curves with +-1 std bands, and (extrapolation)
    validation loss by length. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for r in result["rows"]:
        curves = [np.asarray(s["val_curve"], dtype=np.float64) for s in r["seeds"]]
        steps = curves[0][:, 0]
        vals = np.stack([c[:, 1] for c in curves])
        mean, std = vals.mean(0), vals.std(0, ddof=1) if len(vals) > 1 else np.zeros(vals.shape[1])
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=f"{r['label']} ({r['params']:,})")
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation loss (nats per {result['tokenizer']} token)")
    ax.set_title(f"suite {result['suite']}: mean +- std over {len(result['seeds'])} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "loss_curves.png")
    fig.savefig(paths[-1])
    plt.close(fig)
    swept = [r for r in result["rows"] if r.get("lr_sweep")]
    if swept:
        paths.append(_plot_sweep(swept, result, out_dir / "lr_sweep.png", plt))
    if result["suite"] == "extrapolation":
        fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
        for r in result["rows"]:
            pts = [(x["length"], x["val_loss_mean"], x["val_loss_std"]) for x in r["lengths"] if "val_loss_mean" in x]
            L, m, s = (np.asarray(v) for v in zip(*pts, strict=True))
            ax.errorbar(L, m, yerr=s, marker="o", capsize=3, label=r["label"])
        ax.axvline(result["scale"]["block_size"], color="gray", linestyle=":", label="training block")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel("validation loss")
        ax.set_title("length extrapolation (models with learned positions stop at the block)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out_dir / "extrapolation.png")
        fig.savefig(paths[-1])
        plt.close(fig)
    return paths


def _plot_sweep(rows: list[dict], result: dict, path: pathlib.Path, plt) -> pathlib.Path:
    """One panel per entry: the selection-split loss curve of every swept rate (the chosen rate
    drawn thick), plus a last panel with each entry's final selection loss against the rate."""
    n = len(rows) + 1
    cols = min(n, 3)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), dpi=80, squeeze=False)
    flat = axes.ravel()
    summary = flat[len(rows)]
    for ax, r in zip(flat, rows, strict=False):
        sweep = r["lr_sweep"]
        for run in sweep["runs"]:
            if not run["curve"]:
                continue
            c = np.asarray(run["curve"], dtype=np.float64)
            chosen = run["lr"] == sweep["chosen_lr"]
            ax.plot(c[:, 0], c[:, 1], linewidth=2.2 if chosen else 1.0,
                    label=f"lr {run['lr']:g}" + (" (chosen)" if chosen else ""))
        ax.set_title(r["label"], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("selection loss", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        pts = [(run["lr"], run["selection_loss"]) for run in sweep["runs"] if run["selection_loss"] is not None]
        if pts:
            x, y = zip(*pts, strict=True)
            (line,) = summary.plot(x, y, marker="o", label=r["label"])
            best = min(pts, key=lambda p: p[1])
            summary.plot([best[0]], [best[1]], marker="*", markersize=12, color=line.get_color())
    summary.set_xscale("log")
    summary.set_xlabel("learning rate", fontsize=8)
    summary.set_ylabel("final selection loss", fontsize=8)
    summary.set_title("sweep: loss by rate (star: chosen)", fontsize=9)
    summary.grid(alpha=0.3)
    summary.legend(fontsize=7)
    for ax in flat[n:]:
        ax.axis("off")
    sweep0 = rows[0]["lr_sweep"]
    fig.suptitle(f"suite {result['suite']}: learning-rate sweep, {sweep0['steps']} steps, seed {sweep0['seed']}, "
                 f"scored on the {sweep0['selection']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_result(result: dict, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """results.json, table.md and the plots into out_dir (which must not hold earlier results)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("table.md", format_table(result)), ("results.json", json.dumps(result, indent=2))):
        write_text_atomic(out_dir / name, text + "\n")  # a killed process never leaves half a results file
    return [out_dir / "results.json", out_dir / "table.md", *plot_result(result, out_dir)]
