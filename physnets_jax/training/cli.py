"""The `physnets` command: train / sample / eval / export / plot (docs/training.md).

`python train_jax.py ARGS` is `physnets train ARGS`. A run folder holds run.json (model, train
and data settings), config.json, tokenizer.json, metrics.jsonl, loss.png, checkpoints/ (orbax) and,
with --memmap, train.bin / val.bin (memory-mapped token arrays).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time
from typing import Any

# Defaults of `train` (the parser's own defaults are None so that a resume can tell which
# options were given explicitly).
TRAIN_DEFAULTS: dict[str, Any] = dict(
    preset="ripplegpt", size="micro", data=None, tokenizer="char", vocab_size=None, val_fraction=0.1,
    memmap=False, steps=300, batch_size=16, lr=2e-3, min_lr_ratio=0.1, warmup_steps=30,
    schedule="cosine", weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, optimizer="adamw",
    momentum=0.9, condition="none", rgd_strength=0.5, rgd_warmup=1000, loss="ce", qfe_lambda=0.05,
    eval_interval=100, eval_batches=10, log_interval=10, seed=1337, ckpt_interval=100, keep=3,
    sample_tokens=200, block_size=None, dropout=None, set=None,
)
TRAIN_FIELDS = (
    "steps", "batch_size", "lr", "min_lr_ratio", "warmup_steps", "schedule", "weight_decay", "beta1",
    "beta2", "grad_clip", "optimizer", "momentum", "condition", "rgd_strength", "rgd_warmup", "loss",
    "qfe_lambda", "eval_interval", "eval_batches", "log_interval", "seed", "ckpt_interval", "sample_tokens",
)
MODEL_OPTIONS = ("preset", "size", "block_size", "dropout", "set")
DATA_OPTIONS = ("data", "tokenizer", "vocab_size", "val_fraction", "memmap")
RUN_FILE = "run.json"


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

    d = TRAIN_DEFAULTS
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
    g.add_argument("--seed", type=int, help=f"model init and batch order ({d['seed']})")
    g = p.add_argument_group("run folder, checkpoints, output")
    g.add_argument("--run-dir", help="run folder (default runs/<preset>-<size>-<date>-<time>)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
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
    return p


def build_parser() -> argparse.ArgumentParser:
    """The parser of the `physnets` console script."""
    p = argparse.ArgumentParser(prog="physnets", description="physnets: train, sample, evaluate, export, plot.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_train_arguments(sub.add_parser("train", help="train a model (same options as train_jax.py)"))
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
    p.add_argument("--scale", default="tiny", choices=tuple(SCALES),
                   help="tiny: 2-core CPU sizes (default); seed: the seeds' model sizes, for an accelerator")
    p.add_argument("--seeds", type=int, default=3, help="seeds per entry (default 3)")
    p.add_argument("--steps", type=int, default=None, help="override the scale's training steps (all entries)")
    p.add_argument("--data", default="tinyshakespeare",
                   help="text file or named corpus (default tinyshakespeare: downloaded once and cached)")
    p.add_argument("--tokenizer", choices=TOKENIZERS, default="char", help="char (default) or bpe")
    p.add_argument("--vocab-size", type=int, default=1024, help="bpe vocabulary (default 1024)")
    p.add_argument("--out", default=None, help="results folder (default results/<suite>-<scale>-<tokenizer>-<time>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results folder")


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


def _barrier(name: str) -> None:
    from physnets_jax.training.sharding import barrier

    barrier(name)


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


def _load_data(spec: dict, run_dir: pathlib.Path, tokenizer=None):
    """(tokenizer, TokenData, fingerprint) of a run's data spec; trains the tokenizer unless one is
    given, and process 0 saves it in run_dir (every process trains the same one)."""
    import hashlib

    from physnets_jax.training.data import (
        TokenData,
        fingerprint,
        load_corpus,
        open_tokens,
        prepare_data,
    )

    if tokenizer is not None and spec.get("memmap") and (run_dir / "train.bin").is_file():
        train = open_tokens(run_dir / "train.bin", tokenizer.vocab_size)
        val = open_tokens(run_dir / "val.bin", tokenizer.vocab_size)
        return tokenizer, TokenData.from_splits(train, val), spec.get("fingerprint")
    text = load_corpus(spec.get("source"))
    tok, data = prepare_data(
        text, tokenizer=spec["tokenizer"], vocab_size=spec.get("vocab_size"), val_fraction=spec["val_fraction"],
        out_dir=run_dir, memmap=bool(spec.get("memmap")), existing_tokenizer=tokenizer,
        save_tokenizer=_is_main(),
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


# --------------------------------------------------------------------------------------------
# train


def train_command(args: argparse.Namespace) -> int:
    """Run `train`: fresh, or --resume from a run folder."""
    import shutil

    from physnets_jax.training.sharding import initialize_distributed

    # before anything is written, and before JAX starts (it fixes the devices)
    initialize_distributed(args.distributed, timeout=args.coordinator_timeout,
                           heartbeat_timeout=args.heartbeat_timeout)
    import jax

    from physnets_core.config import ModelConfig
    from physnets_jax.model import build_model, count_params
    from physnets_jax.training.data import load_tokenizer
    from physnets_jax.training.sharding import check_batch, describe_mesh
    from physnets_jax.training.train import TrainConfig, format_length_table, length_eval, train

    given = {k: v for k, v in vars(args).items() if v is not None and k in TRAIN_DEFAULTS or k == "set" and v}
    resume = args.resume or args.resume_step is not None
    lengths = _parse_lengths(args.eval_lengths)
    mesh = None
    if args.mesh or jax.process_count() > 1:
        from physnets_jax.training.sharding import make_mesh

        mesh = make_mesh(args.mesh or "data:-1")

    if resume:
        if not args.run_dir:
            raise CLIError("--resume needs --run-dir (the folder of the run to continue)")
        run_dir = pathlib.Path(args.run_dir)
        if not (run_dir / RUN_FILE).is_file():
            raise CLIError(f"{run_dir} is not a run folder (no {RUN_FILE}); nothing to resume")
        saved = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        cfg = ModelConfig.from_dict(saved["model_config"])
        options = saved.get("options", {})
        if any(k in given for k in MODEL_OPTIONS):
            o = {**saved["options"], **{k: given[k] for k in MODEL_OPTIONS if k in given}}
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
        tc_dict = {**saved["train_config"], **{k: given[k] for k in TRAIN_FIELDS if k in given}}
        if "keep" in given:
            tc_dict["keep_checkpoints"] = given["keep"]
        tc = TrainConfig.from_dict(tc_dict)
        check_batch(mesh, tc.batch_size)
        tokenizer = load_tokenizer(run_dir)
        tokenizer, data, fp = _load_data(spec, run_dir, tokenizer)
        if spec.get("fingerprint") and fp != spec["fingerprint"]:
            raise CLIError(f"the data of {run_dir} ({spec.get('source') or 'embedded'}) changed since the run "
                           "started; resuming on other data would not continue the same run")
    else:
        ablation = _ablation_options(args.ablation)
        o = {**TRAIN_DEFAULTS, **ablation, **given}
        if ablation and given.get("set"):  # the user's --set entries come after (and win over) the ablation's
            o["set"] = ablation["set"] + given["set"]
        if "size" not in given:  # "micro" (the quick-start size) exists for gpt and ripplegpt only
            from physnets_core.config import preset_names, preset_sizes

            if o["preset"] in preset_names() and o["size"] not in preset_sizes(o["preset"]):
                o["size"] = "small"
        if args.run_dir:
            run_dir = pathlib.Path(args.run_dir)
        elif jax.process_count() > 1:
            raise CLIError("a multi-process run needs --run-dir (one folder that every process can see); "
                           "the default name holds the start time, which differs between processes")
        else:
            run_dir = _default_run_dir(o["preset"], o["size"])
        # validate the model and train options before anything is written or the data is prepared
        from physnets_core.config import preset as _preset

        _preset(o["preset"], o["size"])
        tc = TrainConfig(**{k: o[k] for k in TRAIN_FIELDS}, keep_checkpoints=o["keep"])
        check_batch(mesh, tc.batch_size)
        exists = run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir()))
        if exists and not args.overwrite:
            raise CLIError(f"run folder {run_dir} already exists; pass --overwrite to replace it, "
                           "or --resume to continue it")
        _barrier("physnets-run-dir-checked")  # every process looked before process 0 writes
        if _is_main():
            if exists:
                shutil.rmtree(run_dir) if run_dir.is_dir() else run_dir.unlink()
            run_dir.mkdir(parents=True, exist_ok=True)
        _barrier("physnets-run-dir-made")
        tokenizer_vocab = o["vocab_size"]
        if o["tokenizer"] == "bpe" and tokenizer_vocab is None:
            preset_vocab = _preset(o["preset"], o["size"]).vocab_size
            tokenizer_vocab = preset_vocab if preset_vocab >= 256 else 1024
        spec = {"source": o["data"], "tokenizer": o["tokenizer"], "vocab_size": tokenizer_vocab,
                "val_fraction": o["val_fraction"], "memmap": bool(o["memmap"])}
        run_dir.mkdir(parents=True, exist_ok=True)  # other hosts without a shared folder
        tokenizer, data, fp = _load_data(spec, run_dir)
        spec["fingerprint"] = fp
        cfg = _model_config(o["preset"], o["size"], o["block_size"], o["dropout"], o["set"], tokenizer.vocab_size)
        options = {k: o[k] for k in MODEL_OPTIONS if k in o}
        if _is_main():
            saved = {"model_config": cfg.to_dict(), "train_config": tc.to_dict(), "data": spec, "options": options,
                     "command": sys.argv}
            (run_dir / RUN_FILE).write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
            (run_dir / "config.json").write_text(cfg.to_json() + "\n", encoding="utf-8")

    model = build_model(cfg, seed=tc.seed)
    devices = jax.devices()[0].platform
    if mesh is not None:
        procs = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
        devices = f"{len(jax.devices())} {devices} devices{procs}, mesh {describe_mesh(mesh)}"
    say = print if _is_main() else (lambda *a, **k: None)
    say(
        f"{options.get('preset')}-{options.get('size')}: {count_params(model):,} parameters ({tokenizer.kind} vocab {tokenizer.vocab_size}, "
        f"{len(data.train):,} train / {len(data.val):,} val tokens); {tc.steps} steps of "
        f"{tc.batch_size}x{cfg.block_size} tokens, {tc.optimizer}"
        f"{'+' + tc.condition if tc.condition != 'none' else ''}, loss {tc.loss}, on {devices}; run folder {run_dir}",
        flush=True,
    )
    sample_fn = _sampler(tokenizer, data, tc.sample_tokens, tc.seed)
    summary = train(
        model, data, tc, progress=not args.no_progress and _is_main(),
        checkpoint_dir=run_dir / "checkpoints", resume=(args.resume_step if args.resume_step is not None else True) if resume else False,
        metrics_path=run_dir / "metrics.jsonl" if _is_main() else None,
        meta={"data_fingerprint": spec.get("fingerprint")}, mesh=mesh, sample_fn=sample_fn,
    )
    if summary["interrupted"]:
        say(f"interrupted by {summary['interrupted']} after step {summary['steps']}; checkpoint saved to "
            f"{summary['checkpoint']}\ncontinue with: python train_jax.py --run-dir {run_dir} --resume", flush=True)
        return 130
    if summary["start_step"] >= tc.steps:
        say(f"nothing to do: {run_dir} is already at step {summary['start_step']} of {tc.steps} "
            "(pass a larger --steps to train on; the cosine schedule then stretches to the new end)")
    elif summary["val_loss"] is not None:
        say(f"done: step {summary['steps']}, train loss {summary['train_loss']:.4f}, val loss {summary['val_loss']:.4f}, "
              f"{summary['tokens_per_s']:,.0f} tokens/s, {summary['seconds']:.0f} s; checkpoint {summary['checkpoint']}")
    if lengths and _is_main():
        rows = length_eval(model, data, lengths, batch_size=min(tc.batch_size, 8), batches=4, seed=tc.seed)
        (run_dir / "eval_lengths.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        print("validation loss by sequence length:\n" + format_length_table(rows, cfg.block_size))
    if not args.no_plot and _is_main() and (run_dir / "metrics.jsonl").is_file():
        from physnets_jax.training.plotting import plot_runs

        plot_runs([run_dir], run_dir / "loss.png", title=run_dir.name)
    if tc.sample_tokens > 0 and _is_main():
        print("-" * 60 + "\n" + sample_fn(model) + "\n" + "-" * 60)
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
            spec = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))["data"]
    tokenizer = load_tokenizer(run_dir) if (run_dir / "tokenizer.json").is_file() else None
    return model, tokenizer, spec, run_dir


def sample_command(args) -> int:
    """Print a sample from a trained model."""
    import jax
    import numpy as np

    from physnets_jax.generate import generate

    model, tokenizer, _, _ = load_for_inference(args.source)
    if tokenizer is None:
        raise CLIError(f"{args.source} has no tokenizer.json; cannot encode the prompt")
    prompt = tokenizer.encode(args.prompt.replace("\\n", "\n"))
    if len(prompt) == 0:
        raise CLIError("--prompt must not be empty")
    out = generate(model, np.asarray(prompt, np.int32)[None], args.tokens, key=jax.random.key(args.seed),
                   temperature=args.temperature, top_k=args.top_k, greedy=args.greedy, crop=not model.cfg.extrapolates)
    print(tokenizer.decode(np.asarray(out)[0]))
    return 0


def eval_command(args) -> int:
    """Print the validation loss at several lengths."""
    from physnets_jax.training.data import load_corpus, prepare_data
    from physnets_jax.training.train import format_length_table, length_eval

    model, tokenizer, spec, run_dir = load_for_inference(args.source)
    if tokenizer is None:
        raise CLIError(f"{args.source} has no tokenizer.json; cannot encode the evaluation text")
    source = args.data if args.data is not None else (spec or {}).get("source")
    fraction = (spec or {}).get("val_fraction", args.val_fraction) if args.data is None else args.val_fraction
    _, data = prepare_data(load_corpus(source), val_fraction=fraction, existing_tokenizer=tokenizer)
    block = model.cfg.block_size
    lengths = _parse_lengths(args.eval_lengths) or [block, 2 * block, 4 * block]
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


def compare_command(args) -> int:
    """Run comparison suites; write table.md, results.json and PNG plots per suite."""
    import shutil

    from physnets_jax.training.compare import SUITES, format_table, run_suite, write_result
    from physnets_jax.training.data import load_corpus, prepare_data

    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown or not suites:
        raise CLIError(f"unknown suite {', '.join(unknown) or repr(args.suite)}; valid suites: {', '.join(SUITES)}")
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        raise CLIError(f"--seeds {args.seeds} and --steps {args.steps} must be positive")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    outs = {}
    for suite in suites:
        out = pathlib.Path(args.out) / suite if args.out and len(suites) > 1 else pathlib.Path(
            args.out or f"results/{suite}-{args.scale}-{args.tokenizer}-{stamp}")
        if out.exists() and any(out.iterdir()) and not args.overwrite:
            raise CLIError(f"results folder {out} already exists; pass --overwrite to replace it")
        outs[suite] = out
    text = load_corpus(args.data)
    tokenizer, data = prepare_data(text, tokenizer=args.tokenizer, vocab_size=args.vocab_size)
    for suite, out in outs.items():
        t0 = time.perf_counter()
        print(f"== suite {suite}, scale {args.scale}, {args.tokenizer} vocab {tokenizer.vocab_size}, "
              f"{args.seeds} seeds ==", flush=True)
        result = run_suite(suite, scale=args.scale, seeds=tuple(range(args.seeds)), data=data,
                           vocab_size=tokenizer.vocab_size, tokenizer_name=args.tokenizer, steps=args.steps,
                           log=lambda m: print(m, flush=True))
        result["data"] = str(args.data)
        result["wall_seconds"] = time.perf_counter() - t0
        if out.exists() and args.overwrite:
            shutil.rmtree(out)
        paths = write_result(result, out)
        print(format_table(result))
        print(f"suite {suite}: {result['wall_seconds']:.0f} s; wrote " + ", ".join(str(p) for p in paths), flush=True)
    return 0


COMMANDS = {"compare": compare_command, "train": train_command, "sample": sample_command, "eval": eval_command,
            "export": export_command, "plot": plot_command}


def _run(fn, args) -> int:
    from physnets_jax.training.checkpoint import CheckpointError
    from physnets_jax.training.train import TrainingDiverged

    try:
        return fn(args)
    except (CLIError, CheckpointError, TrainingDiverged, ValueError, FileNotFoundError, FileExistsError,
            ConnectionError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1 if isinstance(err, TrainingDiverged) else 2


def train_main(argv: list[str] | None = None) -> int:
    """Entry of `python train_jax.py`."""
    args = build_train_parser().parse_args(argv)
    return _run(train_command, args)


def main(argv: list[str] | None = None) -> int:
    """Entry of the `physnets` console script."""
    args = build_parser().parse_args(argv)
    return _run(COMMANDS[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
