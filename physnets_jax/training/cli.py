"""The `physnets` command: train / sample / eval / export / plot (docs/training.md).

`python train_jax.py ARGS` is `physnets train ARGS`. A run folder holds run.json (model, train
and data settings), config.json, tokenizer.json, metrics.jsonl, loss.png, checkpoints/ (orbax) and,
with --memmap, train.bin / val.bin (memory-mapped token arrays).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time
from typing import Any

from physnets_jax.training.host_memory import keep_freed_host_memory

# Defaults of the options that are not TrainConfig fields; the parser's own defaults are None so
# that a resume can tell which options were given explicitly. TrainConfig holds the rest.
OPTION_DEFAULTS: dict[str, Any] = dict(
    preset="ripplegpt", size="micro", data=None, tokenizer="char", vocab_size=None, val_fraction=0.1,
    memmap=False, block_size=None, dropout=None, set=None,
)
MODEL_OPTIONS = ("preset", "size", "block_size", "dropout", "set")
DATA_OPTIONS = ("data", "tokenizer", "vocab_size", "val_fraction", "memmap")
RUN_FILE = "run.json"


def train_fields() -> tuple[str, ...]:
    """TrainConfig fields set by the option of the same name (keep_checkpoints is --keep)."""
    import dataclasses

    from physnets_jax.training.train import TrainConfig

    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "keep_checkpoints")


def train_defaults() -> dict[str, Any]:
    """Every `train` option's default: TrainConfig's fields (the single source of training
    defaults) plus the model, data and run options."""
    from physnets_jax.training.train import TrainConfig

    tc = TrainConfig()
    return {**OPTION_DEFAULTS, **{k: getattr(tc, k) for k in train_fields()}, "keep": tc.keep_checkpoints}


class CLIError(Exception):
    """A user error: printed as 'error: ...' with exit status 2."""


# --------------------------------------------------------------------------------------------
# Parsers


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `physnets train` / `python train_jax.py`."""
    from physnets_core.config import preset_names
    from physnets_jax.training.data import CORPUS_NAMES, TOKENIZERS
    from physnets_jax.training.train import CONDITIONING, LOSSES, OPTIMIZERS, SCHEDULES
    from physnets_jax.training.wave_ablations import ablation_names

    d = train_defaults()
    g = p.add_argument_group("model")
    g.add_argument("--preset", help=f"one of: {', '.join(preset_names())} (default {d['preset']})")
    g.add_argument("--size", help=f"preset size, e.g. nano, micro, small = the seed's (default {d['size']} where the preset has it, else small)")
    g.add_argument("--block-size", type=int, help="training context (default: the preset's)")
    g.add_argument("--dropout", type=float, help="override the preset's dropout")
    g.add_argument("--set", action="append", metavar="FIELD=VALUE", default=None,
                   help="any other ModelConfig field, e.g. --set residual=orthogonal_parallel (repeatable)")
    g.add_argument("--ablation", choices=ablation_names(),
                   help="one of the Wave-Native GPT seed's experiments: sets preset, mixer options, optimizer, "
                        "loss and the seed's hyper-parameters (explicit options still win)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help=f"text file, folder of *.txt, or a named corpus ({', '.join(CORPUS_NAMES)}); "
                                  "default: the embedded Shakespeare plays")
    g.add_argument("--tokenizer", choices=TOKENIZERS, help="char (default) or byte-level bpe")
    g.add_argument("--vocab-size", type=int, help="bpe vocabulary (default: the preset's if >= 256, else 1024)")
    g.add_argument("--val-fraction", type=float, help=f"last fraction of the text used for validation ({d['val_fraction']})")
    g.add_argument("--memmap", action="store_true", default=None,
                   help="write the token arrays to the run folder and memory-map them (large corpora)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"training steps ({d['steps']})")
    g.add_argument("--batch-size", type=int, help=f"sequences per step ({d['batch_size']})")
    g.add_argument("--lr", type=float, help=f"peak learning rate ({d['lr']})")
    g.add_argument("--min-lr-ratio", type=float, help=f"final lr / peak lr for cosine ({d['min_lr_ratio']})")
    g.add_argument("--warmup-steps", type=int, help=f"linear warmup steps ({d['warmup_steps']})")
    g.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule after warmup (cosine)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help="adamw (default), sgd (+momentum), rgd (resonant)")
    g.add_argument("--condition", choices=CONDITIONING, help="chain condition_gradients before the optimizer (none)")
    g.add_argument("--weight-decay", type=float, help=f"decoupled decay; adamw/sgd skip norms, biases, gains ({d['weight_decay']})")
    g.add_argument("--beta1", type=float, help=f"adamw/rgd ({d['beta1']})")
    g.add_argument("--beta2", type=float, help=f"adamw/rgd ({d['beta2']})")
    g.add_argument("--momentum", type=float, help=f"sgd momentum, 0 = plain sgd ({d['momentum']})")
    g.add_argument("--rgd-strength", type=float, help=f"rgd resonance strength ({d['rgd_strength']})")
    g.add_argument("--rgd-warmup", type=int, help=f"rgd resonance warmup steps ({d['rgd_warmup']})")
    g.add_argument("--grad-clip", type=float, help=f"global-norm clipping, 0 = off ({d['grad_clip']})")
    g.add_argument("--loss", choices=LOSSES, help="ce (default) or qfe (cross-entropy + phase coherence)")
    g.add_argument("--qfe-lambda", type=float, help=f"qfe coherence weight ({d['qfe_lambda']})")
    g.add_argument("--no-qfe-projection", dest="qfe_project", action="store_false", default=None,
                   help="qfe on the full one-hot at any vocabulary (the Wave-Native headline run) instead of "
                        "projecting vocabularies > 256 onto 256 dims")
    g.add_argument("--seed", type=int, help=f"model init and batch order ({d['seed']})")
    g = p.add_argument_group("run folder, checkpoints, output")
    g.add_argument("--run-dir", help="run folder (default runs/<preset>-<size>-<date>-<time>)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only a physnets run folder, once the new one is prepared)")
    g.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its latest checkpoint")
    g.add_argument("--resume-step", type=int, help="continue from this checkpoint step instead of the latest")
    g.add_argument("--ckpt-interval", type=int, help=f"checkpoint every N steps, 0 = only at the end ({d['ckpt_interval']})")
    g.add_argument("--keep", type=int, help=f"checkpoints kept ({d['keep']})")
    g.add_argument("--eval-interval", type=int, help=f"steps between validation losses + samples ({d['eval_interval']})")
    g.add_argument("--eval-batches", type=int, help=f"batches per validation estimate ({d['eval_batches']})")
    g.add_argument("--log-interval", type=int, help=f"steps between loss logs ({d['log_interval']})")
    g.add_argument("--sample-tokens", type=int, help=f"length of the samples printed ({d['sample_tokens']}; 0 = none)")
    g.add_argument("--eval-lengths", help="after training, val loss at these lengths, e.g. 256,512,1024")
    g.add_argument("--mesh", help="shard over devices: data:N (data parallel), fsdp:N, or data:2,fsdp:2; the "
                                  "product must equal the device count of all processes (default with several "
                                  "processes: data:-1)")
    g = p.add_argument_group("several processes (docs/training.md, 'Several processes')")
    g.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() even when no JAX_COORDINATOR_ADDRESS / Slurm / Open MPI "
                        "variable says so (a Cloud TPU pod slice: JAX finds the other workers itself)")
    g.add_argument("--coordinator-timeout", type=float, default=300.0,
                   help="seconds to wait for the coordinator (process 0) and all processes at start (300)")
    g.add_argument("--heartbeat-timeout", type=int, default=100,
                   help="seconds after which a process that stopped responding is declared dead and every "
                        "process of the run exits with an error (100)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    g.add_argument("--no-plot", action="store_true", help="do not write loss.png")


def build_train_parser(prog: str = "train_jax.py") -> argparse.ArgumentParser:
    """The parser of `python train_jax.py`."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Train a physnets model with JAX. With no arguments: ripplegpt micro, 300 steps on "
        "the embedded Shakespeare corpus, with a progress bar, validation losses, samples, "
        "checkpoints and metrics in runs/.",
    )
    add_train_arguments(p)
    p.set_defaults(invocation=_invocation(None))
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `physnets` console script."""
    p = argparse.ArgumentParser(prog="physnets", description="physnets: train, sample, evaluate, export, plot.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    t = sub.add_parser("train", help="train a model (same options as train_jax.py)")
    add_train_arguments(t)
    t.set_defaults(invocation=_invocation("train"))
    s = sub.add_parser("sample", help="generate text from a run folder or an export folder")
    s.add_argument("source", help="run folder (latest checkpoint), checkpoint folder, or export folder")
    s.add_argument("--prompt", default="ROMEO:\n", help="prompt text (default 'ROMEO:\\n')")
    s.add_argument("--tokens", type=int, default=300, help="tokens to generate")
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-k", type=int, default=20)
    s.add_argument("--greedy", action="store_true")
    s.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval", help="validation loss at several sequence lengths")
    e.add_argument("source", help="run folder, checkpoint folder, or export folder")
    e.add_argument("--eval-lengths", default=None, help="comma-separated lengths (default: block, 2x, 4x)")
    e.add_argument("--data", default=None, help="for export folders: the text to evaluate on (default: embedded)")
    e.add_argument("--val-fraction", type=float, default=0.1)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--batches", type=int, default=4)
    e.add_argument("--seed", type=int, default=0)
    x = sub.add_parser("export", help="write model.safetensors + config.json (+ tokenizer.json) for both backends")
    x.add_argument("source", help="run folder (latest checkpoint) or checkpoint folder (<run>/checkpoints/<step>)")
    x.add_argument("out_dir")
    x.add_argument("--step", type=int, default=None, help="checkpoint step of a run folder (default latest)")
    x.add_argument("--overwrite", action="store_true")
    c = sub.add_parser("compare", help="fair multi-seed comparison suites (iso-parameter, iso-tokens)")
    add_compare_arguments(c)
    q = sub.add_parser("plot", help="PNG of train/val loss curves of one or more runs")
    q.add_argument("runs", nargs="+", help="run folders (or metrics.jsonl files)")
    q.add_argument("--out", default=None, help="output PNG (default loss.png); with --diagnostics a folder "
                                                "(default RUN/diagnostics)")
    q.add_argument("--diagnostics", action="store_true",
                   help="instead of loss curves: the wave-packet plots (wave models) and ripple decay fields "
                        "(ripple models) of one trained run, export or checkpoint folder")
    q.add_argument("--title", default=None)
    return p


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `physnets compare` / `python benchmarks/compare.py`."""
    from physnets_jax.training.compare import SCALES, SUITES
    from physnets_jax.training.data import TOKENIZERS

    p.add_argument("--suite", default="seeds", help=f"one of {', '.join(SUITES)}, or a comma list (default seeds)")
    p.add_argument("--scale", default="tiny",
                   help=f"one of {', '.join(SCALES)}. tiny: 2-core CPU sizes (default); small-cpu: 4 layers x 128, "
                        "block 128, validation loss at 1/8, 1/4, 1/2 and all of the budget; seed: the seeds' model "
                        "sizes, for an accelerator")
    p.add_argument("--seeds", type=int, default=3, help="seeds per entry (default 3)")
    p.add_argument("--steps", type=int, default=None, help="override the scale's training steps (all entries)")
    p.add_argument("--data", default=None,
                   help="text file, folder of *.txt or named corpus (default: the embedded Shakespeare plays, "
                        "as for train; tinyshakespeare is downloaded once and cached)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="char", help="char (default) or bpe")
    p.add_argument("--vocab-size", type=int, default=1024, help="bpe vocabulary (default 1024)")
    p.add_argument("--out", default=None, help="results folder (default results/<suite>-<scale>-<tokenizer>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted suite in --out: finished runs are reused, the rest are trained "
                        "(the settings must be the folder's)")
    p.add_argument("--lr-sweep", action=argparse.BooleanOptionalAction, default=None,
                   help="per entry, pick the learning rate from a short sweep scored on a held-out slice of the "
                        "training split (default: on for the seeds and residual suites)")
    p.add_argument("--lr-grid", default=None,
                   help="comma-separated rates of the sweep, e.g. 1e-3,2e-3,4e-3 (default: 0.5x, 1x, 2x the "
                        "scale's lr); implies --lr-sweep")
    p.add_argument("--lr-extend", type=int, default=None,
                   help="when an entry's best rate is the smallest or largest of the grid, try up to this many "
                        "more rates past that edge (same ratio) so the choice is bracketed (default 2; 0: never)")


# --------------------------------------------------------------------------------------------
# Helpers


def _overrides(sets) -> dict[str, Any]:
    """{field: typed value} of --set FIELD=VALUE entries (physnets_core.config.parse_assignment)."""
    from physnets_core.config import parse_assignment

    out = {}
    for item in sets or []:
        try:
            field, value = parse_assignment(item)
        except ValueError as e:
            raise CLIError(f"--set {e}") from None
        out[field] = value
    return out


def _parse_lengths(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        lengths = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise CLIError(f"--eval-lengths {text!r} must be comma-separated integers, e.g. 256,512,1024") from None
    if not lengths or any(n < 1 for n in lengths):
        raise CLIError(f"--eval-lengths {text!r} must be positive integers")
    return lengths


def _model_config(preset_name: str, size: str, block_size, dropout, sets, vocab_size: int):
    from physnets_core.config import preset

    overrides = {"vocab_size": vocab_size, **_overrides(sets)}
    if block_size is not None:
        overrides["block_size"] = block_size
    if dropout is not None:
        overrides["dropout"] = dropout
    return preset(preset_name, size, **overrides)


def _ablation_options(name: str | None) -> dict[str, Any]:
    """Train options of one of the seed's ablations (physnets_jax.training.wave_ablations); {} for None."""
    if name is None:
        return {}
    from physnets_jax.training.wave_ablations import make_ablation

    a = make_ablation(name)
    sets = [f"{k}={json.dumps(v)}" for k, v in a["overrides"].items()]
    return dict(
        preset=a["preset"], set=sets, optimizer=a["optimizer"], loss=a["loss"], lr=a["lr"], dropout=a["dropout"],
        weight_decay=a["weight_decay"], warmup_steps=a["warmup_steps"], rgd_strength=a["rgd_strength"],
        rgd_warmup=a["rgd_warmup"], qfe_lambda=a["qfe_lambda"],
    )


def _is_main() -> bool:
    import jax

    return jax.process_index() == 0


def _prompt_ids(tokenizer, data, text: str):
    import numpy as np

    try:
        ids = tokenizer.encode(text)
    except ValueError:
        ids = np.asarray(data.train[:1]) if data is not None else np.zeros(1, np.int32)
    if len(ids) == 0:
        ids = np.zeros(1, np.int32)
    return np.asarray(ids, dtype=np.int32)[None]


def _sampler(tokenizer, data, n_tokens: int, seed: int):
    def sample(model) -> str:
        import jax
        import numpy as np

        from physnets_jax.generate import generate

        prompt = _prompt_ids(tokenizer, data, "ROMEO:\n")
        out = generate(model, prompt, n_tokens, key=jax.random.key(seed), temperature=0.8, top_k=20,
                       crop=not model.cfg.extrapolates)
        return tokenizer.decode(np.asarray(out)[0])

    return sample


def _invocation(command: str | None) -> str:
    """The command line the user typed to reach `command` ('physnets train', 'python train_jax.py',
    'python -m physnets_jax.training.cli train'), for the hints printed after an interrupt."""
    import os

    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "physnets"
    name = os.path.basename(argv0)
    if name == "cli.py":  # python -m physnets_jax.training.cli (or its alias physnets_jax.cli)
        return "python -m physnets_jax.training.cli" + (f" {command}" if command else "")
    if name.endswith(".py"):
        return f"python {argv0}" + (f" {command}" if command else "")
    return name + (f" {command}" if command else "")


def _sha256_file(path: pathlib.Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _token_file_records(folder: pathlib.Path) -> dict[str, dict[str, Any]]:
    """{'train.bin': {'bytes', 'sha256'}, 'val.bin': ...}: what run.json records of --memmap token files."""
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": _sha256_file(folder / name)}
            for name in ("train.bin", "val.bin")}


def _verify_token_files(run_dir: pathlib.Path, records: dict | None) -> None:
    """Raise CLIError naming the token file whose size or SHA-256 differs from run.json's record."""
    if not records:
        print(f"note: {run_dir / RUN_FILE} records no checksums of train.bin/val.bin (written by an older "
              "physnets); they cannot be verified", flush=True)
        return
    for name, want in records.items():
        path = run_dir / name
        size = path.stat().st_size
        if size != want["bytes"]:
            raise CLIError(f"{path} has {size:,} bytes but {RUN_FILE} records {want['bytes']:,}: the token file "
                           "changed since the run started; restore it or delete train.bin and val.bin to "
                           "tokenise the corpus again")
        if _sha256_file(path) != want["sha256"]:
            raise CLIError(f"{path} does not match the SHA-256 recorded in {RUN_FILE}: the token file changed "
                           "since the run started; restore it or delete train.bin and val.bin to tokenise the "
                           "corpus again")


def _load_data(spec: dict, out_dir: pathlib.Path | None, tokenizer=None):
    """(tokenizer, TokenData, fingerprint) of a run's data spec. A --memmap run whose token files
    exist reads them after checking them against run.json; otherwise the corpus is tokenised (the
    tokenizer is trained unless given) and, with out_dir, the tokenizer and token files written there."""
    import hashlib

    from physnets_jax.training.data import (
        TokenData,
        fingerprint,
        load_corpus,
        open_tokens,
        prepare_data,
    )

    if tokenizer is not None and spec.get("memmap") and out_dir is not None and (out_dir / "train.bin").is_file():
        _verify_token_files(out_dir, spec.get("token_files"))
        train = open_tokens(out_dir / "train.bin", tokenizer.vocab_size)
        val = open_tokens(out_dir / "val.bin", tokenizer.vocab_size)
        return tokenizer, TokenData.from_splits(train, val), spec.get("fingerprint")
    text = load_corpus(spec.get("source"))
    tok, data = prepare_data(
        text, tokenizer=spec["tokenizer"], vocab_size=spec.get("vocab_size"), val_fraction=spec["val_fraction"],
        out_dir=out_dir, memmap=bool(spec.get("memmap")) and out_dir is not None, existing_tokenizer=tokenizer,
    )
    fp = hashlib.sha256((fingerprint(text) + tok.to_json()).encode()).hexdigest()
    return tok, data, fp


def _default_run_dir(preset_name: str, size: str) -> pathlib.Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = pathlib.Path("runs") / f"{preset_name}-{size}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = pathlib.Path("runs") / f"{preset_name}-{size}-{stamp}-{n}"
    return path


def _local_source(data) -> pathlib.Path | None:
    """The local path a --data value reads (None for the embedded and named corpora)."""
    from physnets_jax.training.data import CORPUS_NAMES

    return None if data is None or str(data) in CORPUS_NAMES else pathlib.Path(data)


def _sync(name: str) -> None:
    """Barrier over all processes of a multi-process run (no-op with one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# --------------------------------------------------------------------------------------------
# train: each step below either only reads and checks, or writes into the run folder being
# prepared; the user's folder is replaced only once everything has been checked.


@dataclasses.dataclass
class RunPlan:
    """Everything `train` decided before training: the folder, the configs, the data."""

    run_dir: pathlib.Path  # the run folder the user named (or the default one)
    cfg: Any  # ModelConfig
    tc: Any  # TrainConfig
    tokenizer: Any
    data: Any  # TokenData
    spec: dict  # run.json's "data"
    options: dict  # run.json's "options" (preset, size, ...)
    resume: bool | int = False  # False: a fresh run; True: the latest checkpoint; N: checkpoint N
    staging: pathlib.Path | None = None  # where a fresh run is being written before it is swapped in


def _given_options(args) -> dict[str, Any]:
    """The train options given on the command line (the parser's defaults are None)."""
    defaults = train_defaults()
    return {k: v for k, v in vars(args).items() if (v is not None and k in defaults) or (k == "set" and v)}


def _fresh_options(args, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults (TrainConfig + OPTION_DEFAULTS), then the --ablation's settings, then the options given."""
    ablation = _ablation_options(args.ablation)
    o = {**train_defaults(), **ablation, **given}
    if ablation and given.get("set"):  # the user's --set entries come after (and win over) the ablation's
        o["set"] = ablation["set"] + given["set"]
    if "size" not in given:  # "micro" (the quick-start size) exists for gpt and ripplegpt only
        from physnets_core.config import preset_names, preset_sizes

        if o["preset"] in preset_names() and o["size"] not in preset_sizes(o["preset"]):
            o["size"] = "small"
    return o


def _check_fresh_options(o: dict[str, Any], given: dict[str, Any]) -> tuple[Any, dict]:
    """(TrainConfig, data spec) of a fresh run's options, with every option checked that can be
    checked before reading the data (the model config with the preset's vocabulary)."""
    from physnets_core.config import preset as _preset
    from physnets_jax.training.train import TrainConfig

    tc = TrainConfig(**{k: o[k] for k in train_fields()}, keep_checkpoints=o["keep"])
    preset_cfg = _preset(o["preset"], o["size"])
    _model_config(o["preset"], o["size"], o["block_size"], o["dropout"], o["set"], preset_cfg.vocab_size)
    vocab = o["vocab_size"]
    if o["tokenizer"] == "char" and "vocab_size" in given:
        raise CLIError(f"--vocab-size {vocab} applies to --tokenizer bpe only: the char tokenizer's vocabulary is "
                       "the corpus's distinct characters (use --set vocab_size=N to pad the model's vocabulary)")
    if o["tokenizer"] == "bpe" and vocab is None:
        vocab = preset_cfg.vocab_size if preset_cfg.vocab_size >= 256 else 1024
    spec = {"source": o["data"], "tokenizer": o["tokenizer"], "vocab_size": vocab,
            "val_fraction": o["val_fraction"], "memmap": bool(o["memmap"])}
    return tc, spec


def _check_data(spec: dict, tokenizer, data, cfg) -> None:
    """The model's vocabulary covers the tokenizer's symbols; both splits are longer than a block."""
    if cfg.vocab_size < tokenizer.vocab_size:
        raise CLIError(
            f"vocab_size={cfg.vocab_size} is smaller than the {tokenizer.vocab_size} symbols of the "
            f"{tokenizer.kind} tokenizer of this corpus: token ids would fall outside the embedding; leave "
            f"vocab_size unset (it follows the tokenizer) or give at least {tokenizer.vocab_size}")
    if spec["tokenizer"] == "bpe" and spec.get("vocab_size") and tokenizer.vocab_size < spec["vocab_size"]:
        print(f"note: BPE learned {tokenizer.vocab_size:,} tokens from this corpus, fewer than --vocab-size "
              f"{spec['vocab_size']:,} (no other pair of tokens occurs twice); the model's vocabulary is "
              f"{tokenizer.vocab_size:,}", flush=True)
    shortest = min(len(data.train), len(data.val))
    if shortest <= cfg.block_size:
        raise CLIError(
            f"the data ({spec.get('source') or 'embedded corpus'}) is too short: the train split has "
            f"{len(data.train):,} tokens and the validation split {len(data.val):,}; each needs more than "
            f"block_size={cfg.block_size} (use a longer text, a smaller --block-size or another --val-fraction)")


def _write_run_files(folder: pathlib.Path, cfg, tc, spec: dict, options: dict) -> None:
    """run.json (everything needed to resume) and config.json."""
    saved = {"model_config": cfg.to_dict(), "train_config": tc.to_dict(), "data": spec, "options": options,
             "command": sys.argv}
    (folder / RUN_FILE).write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(cfg.to_json() + "\n", encoding="utf-8")


def _plan_fresh(args, given: dict[str, Any], mesh=None) -> RunPlan:
    """Check every option and the target folder, then prepare the new run folder beside it:
    tokenizer, token files, run.json, config.json (process 0). The user's folder is not touched."""
    import jax

    from physnets_core.folders import abandon_staging, begin_staging, check_target
    from physnets_jax.training.sharding import check_batch

    o = _fresh_options(args, given)
    tc, spec = _check_fresh_options(o, given)
    check_batch(mesh, tc.batch_size)
    if not args.run_dir and jax.process_count() > 1:
        raise CLIError("a multi-process run needs --run-dir (one folder that every process can see); "
                       "the default name holds the start time, which differs between processes")
    run_dir = pathlib.Path(args.run_dir) if args.run_dir else _default_run_dir(o["preset"], o["size"])
    try:
        check_target(run_dir, overwrite=args.overwrite, kinds=("run",), sources=[_local_source(o["data"])],
                     what="run folder")
    except FileExistsError:
        raise CLIError(f"run folder {run_dir} already exists; pass --overwrite to replace it, "
                       "or --resume to continue it") from None
    _sync("physnets-run-folder-checked")  # every process has looked before process 0 replaces it
    staging = begin_staging(run_dir) if _is_main() else None
    try:
        tokenizer, data, fp = _load_data(spec, staging)
        spec["fingerprint"] = fp
        if staging is not None and spec["memmap"]:
            spec["token_files"] = _token_file_records(staging)
        cfg = _model_config(o["preset"], o["size"], o["block_size"], o["dropout"], o["set"], tokenizer.vocab_size)
        _check_data(spec, tokenizer, data, cfg)
        options = {k: o[k] for k in MODEL_OPTIONS if k in o}
        if staging is not None:
            _write_run_files(staging, cfg, tc, spec, options)
    except BaseException:
        if staging is not None:
            abandon_staging(staging)
        raise
    return RunPlan(run_dir, cfg, tc, tokenizer, data, spec, options, resume=False, staging=staging)


def _read_run_file(run_dir: pathlib.Path) -> dict:
    """run.json of a run folder, checked to hold what a resume needs."""
    from physnets_core.export_format import read_json

    path = run_dir / RUN_FILE
    if not path.is_file():
        raise CLIError(f"{run_dir} is not a run folder (no {RUN_FILE}); nothing to resume")
    saved = read_json(path)
    missing = [k for k in ("model_config", "train_config", "data") if k not in saved]
    if missing:
        raise CLIError(f"{path} lacks {', '.join(missing)}; it was not written by physnets train")
    return saved


def _plan_resume(args, given: dict[str, Any], mesh=None) -> RunPlan:
    """Read run.json, check the options given against it, check the folder is writable and the
    data unchanged (token files against their checksums)."""
    from physnets_core.config import ModelConfig
    from physnets_core.folders import check_writable
    from physnets_jax.training.data import load_tokenizer
    from physnets_jax.training.sharding import check_batch
    from physnets_jax.training.train import TrainConfig

    if not args.run_dir:
        raise CLIError("--resume needs --run-dir (the folder of the run to continue)")
    if args.overwrite:
        raise CLIError("--overwrite replaces a run and --resume continues it: pass one of them")
    run_dir = pathlib.Path(args.run_dir)
    saved = _read_run_file(run_dir)
    try:
        cfg = ModelConfig.from_dict(saved["model_config"])
    except (TypeError, ValueError) as e:
        raise CLIError(f"{run_dir / RUN_FILE}: model_config: {e}") from None
    options = saved.get("options", {})
    if any(k in given for k in MODEL_OPTIONS):
        o = {**options, **{k: given[k] for k in MODEL_OPTIONS if k in given}}
        wanted = _model_config(o["preset"], o["size"], o.get("block_size"), o.get("dropout"), o.get("set"),
                               cfg.vocab_size)
        diff = cfg.diff(wanted)
        if diff:
            raise CLIError(f"{run_dir} was trained with a different model config: " + "; ".join(
                f"{k}: run {a!r}, given {b!r}" for k, (a, b) in diff.items()))
    spec = saved["data"]
    for k in DATA_OPTIONS:
        if k in given and given[k] != spec.get({"data": "source"}.get(k, k)):
            raise CLIError(f"{run_dir} was trained with {k}={spec.get({'data': 'source'}.get(k, k))!r}; "
                           f"cannot resume with {k}={given[k]!r}")
    tc_dict = {**saved["train_config"], **{k: given[k] for k in train_fields() if k in given}}
    if "keep" in given:
        tc_dict["keep_checkpoints"] = given["keep"]
    tc = TrainConfig.from_dict(tc_dict)
    check_batch(mesh, tc.batch_size)
    if _is_main():
        check_writable(run_dir)
        if (run_dir / "checkpoints").is_dir():
            check_writable(run_dir / "checkpoints")
    tokenizer, data, fp = _load_data(spec, run_dir, load_tokenizer(run_dir))
    if spec.get("fingerprint") and fp != spec["fingerprint"]:
        raise CLIError(f"the data of {run_dir} ({spec.get('source') or 'embedded'}) changed since the run "
                       "started; resuming on other data would not continue the same run")
    resume = args.resume_step if args.resume_step is not None else True
    return RunPlan(run_dir, cfg, tc, tokenizer, data, spec, options, resume=resume)


def _build_and_commit(plan: RunPlan, lengths: list[int]):
    """The model of the plan, with the memory of --eval-lengths checked; then the prepared run
    folder of a fresh run replaces the user's (the only moment anything of theirs is deleted)."""
    from physnets_core.folders import abandon_staging, commit_staging
    from physnets_jax.model import build_model
    from physnets_jax.training.memory import check_length_eval_fits

    try:
        model = build_model(plan.cfg, seed=plan.tc.seed)
        if lengths:
            check_length_eval_fits(model, lengths, batch=min(plan.tc.batch_size, 8))
        if plan.staging is not None:
            commit_staging(plan.staging, plan.run_dir)
    except BaseException:
        if plan.staging is not None:
            abandon_staging(plan.staging)
        raise
    if plan.resume is False:
        _sync("physnets-run-folder-ready")  # the other processes checkpoint into the folder just swapped in
    return model


def _print_header(plan: RunPlan, model, mesh) -> None:
    import jax

    from physnets_jax.model import count_params
    from physnets_jax.training.sharding import describe_mesh

    tc, cfg, tok, data = plan.tc, plan.cfg, plan.tokenizer, plan.data
    if not _is_main():
        return
    devices = jax.devices()[0].platform
    if mesh is not None:
        procs = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        devices = f"{len(jax.devices())} {devices} devices{procs}, mesh {describe_mesh(mesh)}"
    print(
        f"{plan.options.get('preset')}-{plan.options.get('size')}: {count_params(model):,} parameters ({tok.kind} "
        f"vocab {tok.vocab_size}, {len(data.train):,} train / {len(data.val):,} val tokens); {tc.steps} steps of "
        f"{tc.batch_size}x{cfg.block_size} tokens, {tc.optimizer}"
        f"{'+' + tc.condition if tc.condition != 'none' else ''}, loss {tc.loss}, on {devices}; run folder "
        f"{plan.run_dir}",
        flush=True,
    )


def _report(summary: dict, plan: RunPlan, invocation: str) -> int | None:
    """Print how training ended; the exit status when it was interrupted, else None."""
    import builtins
    import math

    tc = plan.tc
    print = builtins.print if _is_main() else (lambda *a, **k: None)  # process 0 speaks for the run
    if summary["interrupted"]:
        print(f"interrupted by {summary['interrupted']} after step {summary['steps']}; checkpoint saved to "
              f"{summary['checkpoint']}\ncontinue with: {invocation} --run-dir {plan.run_dir} --resume", flush=True)
        return 130
    if summary["start_step"] >= tc.steps:
        print(f"nothing to do: {plan.run_dir} is already at step {summary['start_step']} of {tc.steps} "
              "(pass a larger --steps to train on; the cosine schedule then stretches to the new end)")
    elif summary["val_loss"] is not None:
        rate = summary["tokens_per_s"]
        speed = (f"{rate:,.0f} tokens/s" if math.isfinite(rate)
                 else "tokens/s not measured (the only step compiled)")
        print(f"done: step {summary['steps']}, train loss {summary['train_loss']:.4f}, val loss "
              f"{summary['val_loss']:.4f}, {speed}, {summary['seconds']:.0f} s; checkpoint {summary['checkpoint']}")
    return None


def _after_training(plan: RunPlan, model, lengths: list[int], sample_fn, no_plot: bool) -> None:
    """Length evaluation, loss.png and the final sample (main process only)."""
    from physnets_jax.training.train import format_length_table, length_eval

    if not _is_main():
        return
    if lengths:
        rows = length_eval(model, plan.data, lengths, batch_size=min(plan.tc.batch_size, 8), batches=4,
                           seed=plan.tc.seed)
        (plan.run_dir / "eval_lengths.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print("validation loss by sequence length:\n" + format_length_table(rows, plan.cfg.block_size))
    if not no_plot and (plan.run_dir / "metrics.jsonl").is_file():
        from physnets_jax.training.plotting import plot_runs

        plot_runs([plan.run_dir], plan.run_dir / "loss.png", title=plan.run_dir.name)
    if plan.tc.sample_tokens > 0:
        print("-" * 60 + "\n" + sample_fn(model) + "\n" + "-" * 60)


def train_command(args: argparse.Namespace) -> int:
    """Run `train`: fresh (everything checked and prepared beside the run folder first), or
    --resume / --resume-step from a run folder."""
    from physnets_jax.training.sharding import initialize_distributed

    # before JAX starts (it fixes the devices) and before anything is read or written
    initialize_distributed(args.distributed, timeout=args.coordinator_timeout,
                           heartbeat_timeout=args.heartbeat_timeout)
    import jax

    from physnets_jax.training.train import train

    given = _given_options(args)
    lengths = _parse_lengths(args.eval_lengths)
    mesh = None
    if args.mesh or jax.process_count() > 1:
        from physnets_jax.training.sharding import make_mesh

        mesh = make_mesh(args.mesh or "data:-1")
    resume = args.resume or args.resume_step is not None
    plan = _plan_resume(args, given, mesh) if resume else _plan_fresh(args, given, mesh)
    model = _build_and_commit(plan, lengths)
    _print_header(plan, model, mesh)
    sample_fn = _sampler(plan.tokenizer, plan.data, plan.tc.sample_tokens, plan.tc.seed)
    summary = train(
        model, plan.data, plan.tc, progress=not args.no_progress and _is_main(),
        checkpoint_dir=plan.run_dir / "checkpoints", resume=plan.resume,
        metrics_path=plan.run_dir / "metrics.jsonl" if _is_main() else None,
        meta={"data_fingerprint": plan.spec.get("fingerprint")}, mesh=mesh, sample_fn=sample_fn,
    )
    status = _report(summary, plan, getattr(args, "invocation", None) or _invocation("train"))
    if status is not None:
        return status
    _after_training(plan, model, lengths, sample_fn, args.no_plot)
    return 0


# --------------------------------------------------------------------------------------------
# sample / eval / export / plot


def load_for_inference(source):
    """(model, tokenizer or None, run spec or None, run folder) from an export, run or checkpoint folder."""
    from physnets_jax.training.data import load_tokenizer

    source = pathlib.Path(source)
    if not source.exists():
        raise CLIError(f"{source} does not exist")
    if (source / "model.safetensors").is_file():
        from physnets_jax.export import load_pretrained

        model = load_pretrained(source)
        run_dir, spec = source, None
    else:
        from physnets_core.config import ModelConfig
        from physnets_jax.model import build_model
        from physnets_jax.state import load_flat_params
        from physnets_jax.training.checkpoint import Checkpointer, CheckpointError

        if (source / "checkpoints").is_dir():
            run_dir, ckpt_dir, step = source, source / "checkpoints", None
        elif source.name.isdigit() and (source / "state").is_dir():
            run_dir, ckpt_dir, step = source.parent.parent, source.parent, int(source.name)
        else:
            raise CLIError(f"{source} is not an export folder (model.safetensors), a run folder (checkpoints/) "
                           "or a checkpoint folder")
        ckpt = Checkpointer(ckpt_dir)
        try:
            leaves, meta = ckpt.restore_arrays(step)
        except CheckpointError as err:
            raise CLIError(str(err)) from None
        finally:
            ckpt.close()
        model = build_model(ModelConfig.from_dict(meta["model_config"]))
        names = meta["param_names"]
        load_flat_params(model, dict(zip(names, leaves[: len(names)], strict=True)))
        model.eval()
        spec = None
        if (run_dir / RUN_FILE).is_file():
            from physnets_core.export_format import read_json

            spec = read_json(run_dir / RUN_FILE).get("data")
    tokenizer = load_tokenizer(run_dir) if (run_dir / "tokenizer.json").is_file() else None
    return model, tokenizer, spec, run_dir


SAMPLE_PROGRESS_FROM = 1000  # samples at least this long show a progress bar (on stderr)


def sample_command(args) -> int:
    """Print a sample from a trained model (memory checked first; a progress bar for long ones)."""
    import jax
    import numpy as np

    from physnets_jax.generate import generate
    from physnets_jax.training.memory import check_fits, sample_bytes

    if args.tokens < 0:
        raise CLIError(f"--tokens {args.tokens} must be >= 0")
    model, tokenizer, _, _ = load_for_inference(args.source)
    if tokenizer is None:
        raise CLIError(f"{args.source} has no tokenizer.json; cannot encode the prompt")
    prompt = tokenizer.encode(args.prompt.replace("\\n", "\n"))
    if len(prompt) == 0:
        raise CLIError("--prompt must not be empty")
    check_fits(sample_bytes(model, 1, len(prompt), args.tokens), f"--tokens {args.tokens}",
               "ask for fewer tokens")
    bar = None
    if args.tokens >= SAMPLE_PROGRESS_FROM:
        from tqdm.auto import tqdm

        bar = tqdm(total=args.tokens, desc="sample", unit="token", dynamic_ncols=True)
    try:
        out = generate(model, np.asarray(prompt, np.int32)[None], args.tokens, key=jax.random.key(args.seed),
                       temperature=args.temperature, top_k=args.top_k, greedy=args.greedy,
                       crop=not model.cfg.extrapolates,
                       progress=None if bar is None else (lambda n: bar.update(n - bar.n)))
    finally:
        if bar is not None:
            bar.close()
    print(tokenizer.decode(np.asarray(out)[0]))
    return 0


def eval_command(args) -> int:
    """Print the validation loss at several lengths."""
    from physnets_jax.training.data import load_corpus, prepare_data
    from physnets_jax.training.memory import check_length_eval_fits
    from physnets_jax.training.train import format_length_table, length_eval

    requested = _parse_lengths(args.eval_lengths)
    model, tokenizer, spec, run_dir = load_for_inference(args.source)
    if tokenizer is None:
        raise CLIError(f"{args.source} has no tokenizer.json; cannot encode the evaluation text")
    block = model.cfg.block_size
    lengths = requested or [block, 2 * block, 4 * block]
    check_length_eval_fits(model, lengths, args.batch_size)
    source = args.data if args.data is not None else (spec or {}).get("source")
    fraction = (spec or {}).get("val_fraction", args.val_fraction) if args.data is None else args.val_fraction
    _, data = prepare_data(load_corpus(source), val_fraction=fraction, existing_tokenizer=tokenizer)
    rows = length_eval(model, data, lengths, batch_size=args.batch_size, batches=args.batches, seed=args.seed)
    print(f"{args.source}: validation loss ({source or 'embedded corpus'}, {args.batches} batches of "
          f"{args.batch_size}) by sequence length\n" + format_length_table(rows, block))
    return 0


def export_command(args) -> int:
    """Export a checkpoint as model.safetensors + config.json (+ tokenizer.json)."""
    from physnets_jax.export import export_checkpoint

    out = export_checkpoint(args.source, args.out_dir, step=args.step, overwrite=args.overwrite)
    files = ", ".join(f"{p.name} ({p.stat().st_size:,} bytes)" for p in sorted(out.iterdir()))
    print(f"exported {args.source} to {out}: {files}")
    return 0


def plot_command(args) -> int:
    """Write the loss-curve PNG of some runs."""
    from physnets_jax.training.plotting import plot_runs

    if args.diagnostics:
        from physnets_jax.training.diagnostics import plot_diagnostics

        if len(args.runs) != 1:
            raise CLIError(f"--diagnostics takes one run folder, got {len(args.runs)}")
        model, tokenizer, _, _ = load_for_inference(args.runs[0])
        out_dir = pathlib.Path(args.out) if args.out else pathlib.Path(args.runs[0]) / "diagnostics"
        paths = plot_diagnostics(model, out_dir, decode=tokenizer.decode if tokenizer is not None else None)
        print("wrote " + ", ".join(str(p) for p in paths))
        return 0
    out = plot_runs(args.runs, args.out or "loss.png", title=args.title)
    print(f"wrote {out}")
    return 0


def _parse_lr_grid(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise CLIError(f"--lr-grid {text!r}: {part.strip()!r} is not a number") from None
    return values


def _compare_folder(out: pathlib.Path, args) -> tuple[pathlib.Path, bool]:
    """(folder the suite works in, whether it is a staging folder to swap in at the end); checks
    only, writes nothing."""
    from physnets_core.folders import SUITE_FILE, check_target, folder_kind, staging_path

    staging = staging_path(out)
    if args.resume:
        if (staging / SUITE_FILE).is_file():  # an interrupted --overwrite run: its new folder was never swapped in
            return staging, True
        if (out / SUITE_FILE).is_file():
            return out, False
        raise CLIError(f"--resume: {out} holds no {SUITE_FILE}, so it is not a suite that physnets compare started; "
                       "nothing to resume")
    try:
        check_target(out, overwrite=args.overwrite, kinds=("results",), sources=[_local_source(args.data)],
                     what="results folder")
    except FileExistsError:
        raise CLIError(f"results folder {out} already exists; pass --overwrite to replace it, or --resume to "
                       "continue the suite it holds") from None
    if out.exists() and folder_kind(out) != "empty":
        return staging, True
    return out, False


def compare_command(args) -> int:
    """Run comparison suites; write table.md, results.json and PNG plots per suite (and, as each
    run finishes, runs/<entry>/<run>.json, which --resume reuses)."""
    import hashlib

    from physnets_core.folders import SUITE_FILE, begin_staging, commit_staging, write_text_atomic
    from physnets_jax.training.compare import (
        LR_EXTEND,
        SUITES,
        SWEEP_SUITES,
        check_lr_extend,
        check_lr_grid,
        check_resume_settings,
        default_lr_grid,
        format_table,
        resolve_scale,
        run_suite,
        suite_settings,
        write_result,
    )
    from physnets_jax.training.data import fingerprint, load_corpus, prepare_data

    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise CLIError(f"unknown suite {', '.join(unknown) or repr(args.suite)}; valid suites: {', '.join(SUITES)}")
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        raise CLIError(f"--seeds {args.seeds} and --steps {args.steps} must be positive")
    sc = resolve_scale(args.scale, args.steps)
    if args.resume and args.overwrite:
        raise CLIError("--overwrite replaces a results folder and --resume continues it: pass one of them")
    if args.resume and not args.out:
        raise CLIError("--resume needs --out: the results folder of the interrupted suite")
    if args.lr_grid is not None and args.lr_sweep is False:
        raise CLIError("--lr-grid sets the rates of a sweep and --no-lr-sweep turns the sweep off: pass one of them")
    grid = check_lr_grid(_parse_lr_grid(args.lr_grid) if args.lr_grid is not None else default_lr_grid(sc.lr))
    if args.lr_extend is not None and args.lr_sweep is False:
        raise CLIError("--lr-extend widens a sweep and --no-lr-sweep turns the sweep off: pass one of them")
    if args.lr_extend is not None and args.lr_extend < 0:
        raise CLIError(f"--lr-extend {args.lr_extend}: the number of rates a sweep may add past the grid's edge "
                       "must be >= 0")
    lr_extend = check_lr_extend(LR_EXTEND if args.lr_extend is None else args.lr_extend)
    if "wave-headline" in suites and (args.lr_sweep or args.lr_grid is not None):
        raise CLIError("the wave-headline suite replays the seed runs' own learning rates; it takes no --lr-sweep "
                       "or --lr-grid")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plans = {}
    for suite in suites:
        out = pathlib.Path(args.out) / suite if args.out and len(suites) > 1 else pathlib.Path(
            args.out or f"results/{suite}-{args.scale}-{args.tokenizer}-{stamp}")
        sweep = args.lr_grid is not None or (args.lr_sweep if args.lr_sweep is not None else suite in SWEEP_SUITES)
        plans[suite] = (out, *_compare_folder(out, args), grid if sweep and suite != "wave-headline" else None)
    text = load_corpus(args.data)
    tokenizer, data = prepare_data(text, tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    data_fp = hashlib.sha256((fingerprint(text) + tokenizer.to_json()).encode()).hexdigest()
    data_name = str(args.data) if args.data is not None else "embedded"
    seeds = tuple(range(args.seeds))
    settings = {s: suite_settings(s, args.scale, sc, seeds, plan[3], args.tokenizer, tokenizer.vocab_size,
                                  data_name, data_fp, lr_extend) for s, plan in plans.items()}
    if args.resume:  # every folder is checked before any suite trains
        for suite, (out, work, _staged, _grid) in plans.items():
            stored = json.loads((work / SUITE_FILE).read_text(encoding="utf-8"))
            check_resume_settings(stored, settings[suite], out)
    for suite, (out, work, staged, suite_grid) in plans.items():
        if not args.resume:
            if staged:
                begin_staging(out)
            else:
                work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(work / SUITE_FILE, json.dumps(settings[suite], indent=2) + "\n")
        t0 = time.perf_counter()
        sweep_note = (f", lr sweep {','.join(f'{v:g}' for v in suite_grid)} (+ up to {lr_extend} past an edge)"
                      if suite_grid else "")
        print(f"== suite {suite}, scale {args.scale}, {args.tokenizer} vocab {tokenizer.vocab_size}, "
              f"{args.seeds} seeds{sweep_note}; runs are saved in {work} as they finish ==", flush=True)
        try:
            result = run_suite(suite, scale=sc, seeds=seeds, data=data, vocab_size=tokenizer.vocab_size,
                               tokenizer_name=args.tokenizer, lr_grid=suite_grid, lr_extend=lr_extend, folder=work,
                               log=lambda m: print(m, flush=True))
        except KeyboardInterrupt:
            done = len(list((work / "runs").glob("*/*.json"))) if (work / "runs").is_dir() else 0
            print(f"error: interrupted; the {done} finished runs are kept in {work}: run the same command with "
                  f"--resume (and without --overwrite) to continue", file=sys.stderr, flush=True)
            return 130
        result["scale_name"] = args.scale
        result["data"] = data_name
        result["wall_seconds"] = time.perf_counter() - t0
        result["run_seconds"] = sum(r["seconds"] for row in result["rows"] for r in row["seeds"]) + sum(
            run.get("seconds", 0.0) for row in result["rows"] for run in (row["lr_sweep"] or {}).get("runs", []))
        written = write_result(result, work)
        if staged:
            commit_staging(work, out)
        paths = [out / p.relative_to(work) for p in written]
        print(format_table(result))
        print(f"suite {suite}: {result['wall_seconds']:.0f} s ({result['runs_trained']} runs trained, "
              f"{result['runs_reused']} reused); wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0


COMMANDS = {"compare": compare_command, "train": train_command, "sample": sample_command, "eval": eval_command,
            "export": export_command, "plot": plot_command}


def _run(fn, args) -> int:
    from physnets_jax.training.checkpoint import CheckpointError
    from physnets_jax.training.train import TrainingDiverged

    try:
        return fn(args)
    except (CLIError, CheckpointError, TrainingDiverged, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1 if isinstance(err, TrainingDiverged) else 2


def train_main(argv: list[str] | None = None) -> int:
    """Entry of `python train_jax.py`."""
    args = build_train_parser().parse_args(argv)
    keep_freed_host_memory()
    return _run(train_command, args)


def main(argv: list[str] | None = None) -> int:
    """Entry of the `physnets` console script."""
    args = build_parser().parse_args(argv)
    if args.command in ("train", "compare"):
        keep_freed_host_memory()
    return _run(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
