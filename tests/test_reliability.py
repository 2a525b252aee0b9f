"""Nothing a user has is deleted or silently corrupted, and every failure is one clear line
(issue 15): overwrite rules, export targets, memmap checksums, typed options, resume branches,
errors naming their file, memory refusals, finite exports, real SIGKILL/SIGTERM and resume.

Real files and real processes throughout. One tiny run (ripplegpt nano, 8 steps, a checkpoint
every 2) is trained once; the runs below reuse its compiled step (same model and optimizer).
"""

import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from physnets_jax.training.cli import main, train_main

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXT = "".join(f"ROMEO:\nBut soft, what light {i} through yonder window breaks?\n\n" for i in range(200))
ARGS = ["--preset", "ripplegpt", "--size", "nano", "--block-size", "16", "--steps", "8", "--batch-size", "4",
        "--eval-interval", "4", "--eval-batches", "1", "--log-interval", "1", "--ckpt-interval", "2", "--keep", "10",
        "--sample-tokens", "0", "--no-progress", "--no-plot", "--seed", "1", "--dropout", "0.1"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(run folder, corpus) of one uninterrupted run of ARGS."""
    root = tmp_path_factory.mktemp("reliability")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    run = root / "base"
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(run)]) == 0
    return run, corpus


def files(folder: pathlib.Path) -> dict[str, bytes]:
    """{relative path: bytes} of every file under folder (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def steps(run: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def metrics(run: pathlib.Path) -> list[dict]:
    """Records of metrics.jsonl, parsed as strict JSON (a bare NaN raises)."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return [json.loads(line, parse_constant=refuse) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys) -> str:
    """stderr of the last command, asserted to be exactly one 'error: ...' line."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def copy_run(base, tmp_path, name="r1") -> pathlib.Path:
    target = tmp_path / name
    shutil.copytree(base[0], target)
    return target


def test_train_defaults_come_from_train_config():
    """Issue 13: TrainConfig is the single source of the CLI's training defaults."""
    from physnets_jax.training.cli import (
        _fresh_options,
        _given_options,
        build_train_parser,
        train_fields,
    )
    from physnets_jax.training.train import TrainConfig

    args = build_train_parser().parse_args([])
    o = _fresh_options(args, _given_options(args))
    assert TrainConfig(**{k: o[k] for k in train_fields()}, keep_checkpoints=o["keep"]) == TrainConfig()
    assert (TrainConfig().steps, TrainConfig().batch_size, TrainConfig().lr) == (300, 16, 2e-3)  # docs/training.md
    assert "training steps (300)" in build_train_parser().format_help()


def test_overwrite_checks_everything_first_and_replaces_only_run_folders(base, tmp_path, capsys):
    """Case 1: a failing --overwrite deletes nothing; only a run folder is replaced, never the
    folder holding the command's own data, and a run that cannot be made leaves no folder."""
    run, corpus = base
    r1 = copy_run(base, tmp_path)
    kept = files(r1)
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(r1), "--overwrite", "--preset", "gtp"]) == 2
    assert "unknown preset 'gtp'" in one_error_line(capsys)
    thesis = tmp_path / "thesis"
    (thesis / "src").mkdir(parents=True)
    (thesis / "thesis.txt").write_text("three years of work")
    (thesis / "src" / "main.py").write_text("print('hi')")
    thesis_files = files(thesis)
    assert train_main([*ARGS, "--run-dir", str(thesis), "--overwrite", "--data", str(tmp_path / "missing.txt")]) == 2
    one_error_line(capsys)
    assert train_main([*ARGS, "--run-dir", str(thesis), "--overwrite", "--data", str(corpus)]) == 2
    assert "is not a physnets run folder (run.json)" in one_error_line(capsys)
    shutil.copy(corpus, r1 / "corpus.txt")
    kept["corpus.txt"] = corpus.read_bytes()
    assert train_main([*ARGS, "--run-dir", str(r1), "--overwrite", "--data", str(r1 / "corpus.txt")]) == 2
    assert f"run folder {r1} contains {r1 / 'corpus.txt'}, which this command reads" in one_error_line(capsys)
    assert train_main([*ARGS, "--run-dir", str(r1), "--overwrite", "--resume"]) == 2
    assert "pass one of them" in one_error_line(capsys)
    assert files(r1) == kept and files(thesis) == thesis_files
    short = tmp_path / "short.txt"
    short.write_text("ROMEO:\nhi\n" * 2)
    assert train_main([*ARGS, "--data", str(short), "--run-dir", str(tmp_path / "new")]) == 2
    assert "too short: the train split has" in one_error_line(capsys)
    # a real replacement, swapped in whole: nothing of the old run is left
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(r1), "--overwrite"]) == 0
    assert not (r1 / "corpus.txt").exists() and steps(r1) == [2, 4, 6, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r1", "short.txt", "thesis"]  # no half-made folders


def test_export_overwrite_never_touches_its_source(base, tmp_path, capsys):
    """Case 2: export over its own source, over a parent of it, or over a non-export folder is
    refused before anything is read or written; a real export replaces only an export."""
    runs = tmp_path / "xp" / "runs"
    runs.mkdir(parents=True)
    r1 = copy_run(base, runs, "r1")
    r2 = copy_run(base, runs, "r2")
    kept = files(runs)
    assert main(["export", str(r1), str(r1), "--overwrite"]) == 2
    assert f"export folder {r1} is {r1}, which this command reads" in one_error_line(capsys)
    assert main(["export", str(r1), str(runs), "--overwrite"]) == 2
    assert f"contains {r1}" in one_error_line(capsys)
    assert main(["export", str(r1 / "checkpoints" / "4"), str(r1), "--overwrite"]) == 2
    one_error_line(capsys)
    assert main(["export", str(r1), str(r2), "--overwrite"]) == 2
    assert "is not a physnets export folder" in one_error_line(capsys)
    assert files(runs) == kept
    out = tmp_path / "exp"
    assert main(["export", str(r1), str(out)]) == 0
    assert main(["export", str(r1 / "checkpoints" / "4"), str(out), "--overwrite"]) == 0
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "np") as f:
        assert f.metadata()["step"] == "4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "xp"]


def test_memmap_resume_verifies_token_files(base, tmp_path, capsys):
    """Case 3: run.json records the token files' sizes and SHA-256; a truncated or zeroed file
    is refused on resume, naming the file."""
    import hashlib

    _, corpus = base
    run = tmp_path / "mm"
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(run), "--memmap"]) == 0
    records = json.loads((run / "run.json").read_text())["data"]["token_files"]
    for name in ("train.bin", "val.bin"):
        data = (run / name).read_bytes()
        assert records[name] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    original = (run / "train.bin").read_bytes()
    resume = ["--run-dir", str(run), "--resume", "--no-progress", "--no-plot"]
    (run / "train.bin").write_bytes(original[:100])
    assert train_main(resume) == 2
    assert f"{run / 'train.bin'} has 100 bytes but run.json records {len(original):,}" in one_error_line(capsys)
    (run / "train.bin").write_bytes(bytes(len(original)))
    assert train_main(resume) == 2
    assert "does not match the SHA-256 recorded in run.json" in one_error_line(capsys)
    (run / "train.bin").write_bytes(original)
    assert train_main(resume) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_model_vocabulary_and_typed_options(base, tmp_path, capsys):
    """Case 4 (+ 7): --set is typed and vocab_size must cover the corpus; --vocab-size is for BPE
    only; BPE smaller than asked says so. None of these leaves a folder behind."""
    _, corpus = base
    target = tmp_path / "v"
    fresh = [*ARGS, "--run-dir", str(target)]
    assert train_main([*fresh, "--data", str(corpus), "--set", "vocab_size=10"]) == 2
    n_chars = len(set(TEXT))
    assert f"vocab_size=10 is smaller than the {n_chars} symbols of the char tokenizer" in one_error_line(capsys)
    assert train_main([*fresh, "--data", str(corpus), "--set", "prenorm=maybe"]) == 2
    assert "prenorm='maybe': expected a bool" in one_error_line(capsys)
    assert train_main([*fresh, "--data", str(corpus), "--set", "dropout=null"]) == 2
    assert "dropout cannot be none" in one_error_line(capsys)
    assert train_main([*fresh, "--data", str(corpus), "--vocab-size", "500"]) == 2
    assert "--vocab-size 500 applies to --tokenizer bpe only" in one_error_line(capsys)
    small = tmp_path / "small.txt"
    small.write_text("ROMEO: But soft, what light through yonder window breaks?\n" * 3)
    assert train_main([*fresh, "--data", str(small), "--tokenizer", "bpe", "--vocab-size", "70000"]) == 2
    out = capsys.readouterr()
    assert "note: BPE learned" in out.out and "fewer than --vocab-size 70,000" in out.out
    assert "is too short" in out.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]


def test_resume_from_an_earlier_step_truncates_the_abandoned_branch(base, tmp_path, capsys):
    """Case 5: --resume-step N deletes the later checkpoints and metrics (saying so), so a later
    --resume continues the new branch; a torn metrics line is dropped; a one-step run writes
    strict JSON and prints no 'nan tokens/s'."""
    run = copy_run(base, tmp_path)
    assert all(r["tokens_per_s"] is None or r["tokens_per_s"] > 0 for r in metrics(base[0]))
    assert train_main(["--run-dir", str(run), "--resume-step", "4", "--steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "resuming from step 4: deleting the later checkpoints (6, 8)" in out
    assert "nan tokens" not in out and "tokens/s not measured" in out
    assert steps(run) == [2, 4, 5]  # an interrupt now would resume at 5, never at the old 8
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5] and metrics(run)[-1]["tokens_per_s"] is None
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # torn by a kill
    assert train_main(["--run-dir", str(run), "--resume", "--steps", "8"]) == 0
    out = capsys.readouterr().out
    assert "dropped the torn last line 6" in out and "nothing to do" not in out
    assert steps(run) == [2, 4, 5, 6, 8]
    assert [r["step"] for r in metrics(run)] == list(range(1, 9))


def test_errors_are_one_line_and_name_their_file(base, tmp_path, capsys):
    """Case 6: corrupt run.json / tokenizer.json / config.json, --lr inf, --seed -1, a corrupt
    latest checkpoint under `sample`, and a run killed before its first checkpoint."""
    run, corpus = base
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(tmp_path / "x"), "--lr", "inf"]) == 2
    assert "lr=inf must be a finite number" in one_error_line(capsys)
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(tmp_path / "x"), "--seed", "-1"]) == 2
    assert "seed=-1 must be a non-negative integer" in one_error_line(capsys)
    assert not (tmp_path / "x").exists()
    r1 = copy_run(base, tmp_path)
    (r1 / "run.json").write_text('{"model_config": ')
    assert train_main(["--run-dir", str(r1), "--resume"]) == 2
    assert f"{r1 / 'run.json'} is not valid JSON" in one_error_line(capsys)
    r2 = copy_run(base, tmp_path, "r2")
    (r2 / "tokenizer.json").write_text("")
    assert main(["sample", str(r2), "--tokens", "4"]) == 2
    assert f"{r2 / 'tokenizer.json'} is not valid JSON" in one_error_line(capsys)
    exp = tmp_path / "exp"
    assert main(["export", str(run), str(exp)]) == 0
    (exp / "config.json").write_text("[1, 2")
    assert main(["sample", str(exp), "--tokens", "4"]) == 2
    assert f"{exp / 'config.json'} is not valid JSON" in one_error_line(capsys)
    r3 = copy_run(base, tmp_path, "r3")
    for f in (r3 / "checkpoints" / "8" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    assert main(["sample", str(r3), "--tokens", "4"]) == 2
    err = one_error_line(capsys)
    assert f"pass its folder {r3 / 'checkpoints' / '6'} instead" in err and "--resume-step" not in err
    # killed before its first checkpoint: --resume starts again at step 0 (no hint loop)
    r4 = copy_run(base, tmp_path, "r4")
    shutil.rmtree(r4 / "checkpoints")
    assert train_main(["--run-dir", str(r4), "--resume"]) == 0
    assert "holds no checkpoint yet" in capsys.readouterr().out
    assert steps(r4) == [2, 4, 6, 8] and [r["step"] for r in metrics(r4)] == list(range(1, 9))
    assert [r["loss"] for r in metrics(r4)] == [r["loss"] for r in metrics(run)]


def test_memory_requests_that_cannot_fit_are_refused_first(base, tmp_path, capsys):
    """Case 6: sample --tokens and eval/train --eval-lengths beyond memory are refused with the
    estimate, before anything is allocated (train: before the run folder is made)."""
    run, corpus = base
    assert main(["sample", str(run), "--tokens", str(10**10)]) == 2
    err = one_error_line(capsys)
    assert f"--tokens {10**10} needs about" in err and " TB, but only " in err and "ask for fewer tokens" in err
    assert main(["eval", str(run), "--eval-lengths", "16,200000", "--batch-size", "8"]) == 2
    assert "--eval-lengths 200000 (batch 8) needs about" in one_error_line(capsys)
    assert train_main([*ARGS, "--data", str(corpus), "--run-dir", str(tmp_path / "m"), "--eval-lengths",
                       "200000"]) == 2
    assert "needs about" in one_error_line(capsys) and not (tmp_path / "m").exists()


def _poison_first_tensor(path: pathlib.Path, name: str) -> None:
    """Write a float32 NaN over the first value of tensor `name` in a safetensors file."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    start = 8 + n + header[name]["data_offsets"][0]
    assert header[name]["dtype"] == "F32"
    raw[start : start + 4] = np.array([np.nan], np.float32).tobytes()
    path.write_bytes(bytes(raw))


def test_broken_exports_are_refused_in_both_backends(base, tmp_path, capsys):
    """Cases 6 and 7: a truncated model.safetensors and one holding NaN give one clear error in
    both backends and in `physnets sample` (no garbage printed)."""
    import physnets_jax
    import physnets_torch

    exp = tmp_path / "exp"
    assert main(["export", str(base[0]), str(exp)]) == 0
    weights = exp / "model.safetensors"
    good = weights.read_bytes()
    _poison_first_tensor(weights, "embedding.wte.weight")
    for load in (physnets_jax.load_pretrained, physnets_torch.load_pretrained):
        with pytest.raises(ValueError, match=r"holds NaN or inf in 1 tensor\(s\): embedding.wte.weight \(1 values\)"):
            load(exp)
    assert main(["sample", str(exp), "--tokens", "4"]) == 2
    assert "holds NaN or inf" in one_error_line(capsys)
    weights.write_bytes(good[: len(good) // 2])
    for load in (physnets_jax.load_pretrained, physnets_torch.load_pretrained):
        with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
            load(exp)
    assert main(["sample", str(exp), "--tokens", "4"]) == 2
    assert "is not a readable safetensors file" in one_error_line(capsys)


def test_long_sample_shows_progress_and_samples_the_same_tokens(base, capsys):
    """Case 8: a long sample reports progress on stderr; the tokens equal a run without it."""
    from physnets_jax.generate import generate
    from physnets_jax.training.cli import load_for_inference

    n = 1100
    assert main(["sample", str(base[0]), "--tokens", str(n), "--greedy"]) == 0
    out = capsys.readouterr()
    assert f"{n}/{n}" in out.err and "sample:" in out.err
    model, tokenizer, _, _ = load_for_inference(base[0])
    prompt = np.asarray(tokenizer.encode("ROMEO:\n"), np.int32)[None]
    plain = generate(model, prompt, n, greedy=True)
    assert out.out == tokenizer.decode(np.asarray(plain)[0]) + "\n"


def test_first_hour_snags(tmp_path, capsys):
    """Case 8: documented attributes after `import physnets_jax` alone; `compare` works offline
    by default (the embedded corpus) and replaces only a results folder."""
    code = "import physnets_jax; print(physnets_jax.data.load_tokenizer.__name__, physnets_jax.training.data.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["load_tokenizer", "physnets_jax.training.data"], done.stderr
    from physnets_jax.training.cli import build_parser

    assert build_parser().parse_args(["compare"]).data is None
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["compare", "--suite", "seeds", "--out", str(folder), "--overwrite"]) == 2
    assert "is not a physnets results folder" in one_error_line(capsys)
    assert (folder / "notes.txt").read_text() == "mine"


def _setpriv_prefix() -> list[str] | None:
    """A command prefix under which writing is checked against permissions (root ignores them
    unless it drops CAP_DAC_OVERRIDE); None when that is impossible here."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"] if setpriv else None


def test_read_only_checkpoints_folder_is_refused_before_training(base, tmp_path):
    """Case 6: a checkpoints/ folder that cannot be written is one error line at the start, not a
    traceback after training (a real process without the right to write there)."""
    prefix = _setpriv_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: permissions cannot be enforced")
    run = copy_run(base, tmp_path)
    os.chmod(run / "checkpoints", 0o555)
    try:
        done = subprocess.run([*prefix, sys.executable, "train_jax.py", "--run-dir", str(run), "--resume", "--steps",
                               "10", "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    finally:
        os.chmod(run / "checkpoints", 0o755)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: cannot write to {run / 'checkpoints'} (Permission denied); training "
                                   "needs to write checkpoints and metrics there")
    assert steps(run) == [2, 4, 6, 8]


def _wait_for(predicate, process, timeout=240.0, what=""):
    t0 = time.monotonic()
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"process ended ({process.returncode}) before {what}: {process.stderr.read()}")
        if time.monotonic() - t0 > timeout:
            process.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def test_sigkill_during_a_checkpoint_write_and_sigterm_resume_exactly(base, tmp_path):
    """A real SIGKILL while a checkpoint is being written, then a real SIGTERM of the resumed
    process, then a resume to the end: every per-step loss and the final state (parameters,
    optimizer, RNG) equal the uninterrupted run's bitwise. Also: the progress bar starts after the
    compiling first step, and the printed hint repeats the command actually used."""
    from physnets_jax.training.checkpoint import Checkpointer

    run, corpus = base
    cut = tmp_path / "cut"
    module = [sys.executable, "-m", "physnets_jax.training.cli", "train"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [a for a in ARGS if a != "--no-progress"]
    first = subprocess.Popen([*module, *args, "--ckpt-interval", "1", "--data", str(corpus), "--run-dir", str(cut)],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def writing_late_checkpoint():
        folder = cut / "checkpoints"
        names = os.listdir(folder) if folder.is_dir() else []
        return any(n.endswith(".orbax-checkpoint-tmp") and int(n.split(".")[0]) >= 3 for n in names)

    _wait_for(writing_late_checkpoint, first, what="a checkpoint write at step >= 3")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    torn = [n for n in os.listdir(cut / "checkpoints") if n.endswith(".orbax-checkpoint-tmp")]
    assert first.returncode == -signal.SIGKILL and torn, "the kill must land during a checkpoint write"
    frames = [f for f in first.stderr.read().replace("\r", "\n").splitlines() if f.startswith("train:")]
    assert frames and " 0/8 " not in frames[0], frames[:2]  # the bar appears once step 1 has compiled
    complete = steps(cut)
    assert complete and int(torn[0].split(".")[0]) == complete[-1] + 1

    second = subprocess.Popen([*module, "--run-dir", str(cut), "--resume", "--no-progress"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # a new checkpoint means the resumed loop runs (with its signal handler installed)
    _wait_for(lambda: steps(cut)[-1] > complete[-1], second, what="a checkpoint after the resume")
    second.send_signal(signal.SIGTERM)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 130, err
    assert f"continue with: python -m physnets_jax.training.cli train --run-dir {cut} --resume" in out

    assert train_main(["--run-dir", str(cut), "--resume", "--no-progress"]) == 0
    assert [(r["step"], r["loss"]) for r in metrics(cut)] == [(r["step"], r["loss"]) for r in metrics(run)]
    assert [r.get("val_loss") for r in metrics(cut)] == [r.get("val_loss") for r in metrics(run)]
    got, meta = Checkpointer(cut / "checkpoints").restore_arrays(8)
    want, _ = Checkpointer(run / "checkpoints").restore_arrays(8)
    assert meta["step"] == 8 and len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
