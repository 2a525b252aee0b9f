"""Two real JAX processes on this machine (jax.distributed over 127.0.0.1, gloo CPU collectives,
2 forced host devices each) train ripplegpt-nano with --mesh data:2,fsdp:2 and agree with one
process holding all 4 devices: same per-step losses, same global batches (each process reading
only its rows), checkpoints that move between process counts, an export both backends load, only
process 0 writing the run's files, and a crashed process that stops the other instead of hanging.

One module fixture runs everything with three interpreters (one single-process, two paired, all
started at once) so the train step compiles once per interpreter; the tests below only read what
they recorded.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.multiprocess_worker import signal_file

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "multiprocess_worker.py"
TEXT = "".join(f"ROMEO:\nBut soft, what light {i} through yonder window breaks?\n\n" for i in range(200))
SEED, BATCH, BLOCK, STEPS = 1, 8, 16, 4
HEARTBEAT = 20  # seconds until a dead process is noticed (JAX: 100); 5 s let live but CPU-starved
# processes miss their heartbeats on this machine at load ~30
# float32: the 2-process gloo all-reduce and the in-process one may add the 4 partial gradients in
# another order; observed differences are 0-1 ulp (~1e-7 relative) per step
RTOL = 2e-6


def free_port() -> int:
    """A TCP port nobody listens on now (bound to port 0, read back, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra: str) -> dict:
    # no inherited JAX settings (coordinator, process id) except the session's compilation cache
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "XLA_")) or k.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE"))}
    # keep the session's other XLA flags (conftest.py: codegen level, threads); set the device count
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), **extra)
    return env


def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None and not path.exists():
            raise AssertionError(f"worker {proc.args[-2]} exited ({proc.returncode}) before writing {path.name}; "
                                 f"its stderr is in {proc.args[-1]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run the single-process worker and the two-process pair; return what they recorded."""
    out = tmp_path_factory.mktemp("multiprocess")
    (out / "corpus.txt").write_text(TEXT)
    args = ["--preset", "ripplegpt", "--size", "nano", "--block-size", str(BLOCK), "--steps", str(STEPS),
            "--batch-size", str(BATCH), "--eval-interval", str(STEPS), "--eval-batches", "1", "--log-interval", "1",
            "--ckpt-interval", "2", "--sample-tokens", "0", "--no-progress", "--seed", str(SEED),
            "--data", str(out / "corpus.txt")]
    (out / "common.json").write_text(json.dumps(
        {"args": args, "heartbeat": HEARTBEAT, "dead_address": f"127.0.0.1:{free_port()}"}))
    port = free_port()
    t0 = time.monotonic()
    # all three at once (the pair needs the single run's folder only for its second command): on
    # two cores the single process's compilation overlaps the pair's
    logs = {name: open(out / f"{name}.stderr", "w") for name in ("single", "pair0", "pair1")}  # noqa: SIM115
    single = subprocess.Popen([sys.executable, str(WORKER), "single", str(out)], env=_env(4),
                              stdout=subprocess.DEVNULL, stderr=logs["single"])
    pair = [
        subprocess.Popen(
            [sys.executable, str(WORKER), "pair", str(out)],
            env=_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)),
            stdout=subprocess.DEVNULL, stderr=logs[f"pair{i}"])
        for i in (0, 1)
    ]
    try:
        # hand each side a copy of the other's run folder once it is complete
        _wait_for(out / "single-fresh.json", single, 900)
        shutil.copytree(out / "one", out / "one_to_two")
        signal_file(out / "one_to_two-ready", "resume")
        _wait_for(out / "pair0-fresh-done", pair[0], 900)
        _wait_for(out / "pair1-fresh-done", pair[1], 900)
        ok = (out / "two").is_dir()
        if ok:
            shutil.copytree(out / "two", out / "two_to_one")
        signal_file(out / "two_to_one-ready", "resume" if ok else "stop")
        for p in pair:
            p.wait(timeout=900)
        ended = time.time()
        single.wait(timeout=300)
    finally:
        for p in [single, *pair]:
            if p.poll() is None:
                p.kill()
        for f in logs.values():
            f.close()
    stderr = [(out / f"pair{i}.stderr").read_text() for i in (0, 1)]
    single_err = (out / "single.stderr").read_text()
    assert single.returncode == 0, single_err[-4000:]
    for i in (0, 1):
        assert (out / f"pair{i}.json").is_file(), f"process {i} ({pair[i].returncode}):\n{stderr[i][-4000:]}"
    return {
        "out": out,
        "single": json.loads((out / "single.json").read_text()),
        "pair": [json.loads((out / f"pair{i}.json").read_text()) for i in (0, 1)],
        "crash": {"rc": [p.returncode for p in pair], "stderr": stderr, "ended": ended,
                  "died_at": float((out / "died_at").read_text()) if (out / "died_at").exists() else None},
        "seconds": time.monotonic() - t0,
    }


def losses(run_dir: pathlib.Path) -> dict[int, float]:
    """step -> training loss, and 'val' -> the final validation loss, from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate records in {run_dir}: {steps}"  # one writer
    out = {r["step"]: r["loss"] for r in records}
    out["val"] = [r["val_loss"] for r in records if "val_loss" in r][-1]
    return out


def test_two_processes_train_like_one_with_all_devices(runs):
    for i in (0, 1):
        assert runs["pair"][i]["fresh"]["rc"] == 0, runs["pair"][i]["fresh"]["stderr"][-3000:]
    assert runs["single"]["fresh"]["rc"] == 0
    two, one = losses(runs["out"] / "two"), losses(runs["out"] / "one")
    assert sorted(k for k in two if k != "val") == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two[s] for s in range(1, STEPS + 1)], [one[s] for s in range(1, STEPS + 1)],
                               rtol=RTOL)
    np.testing.assert_allclose(two["val"], one["val"], rtol=RTOL)
    assert two[1] != two[STEPS]  # it trained


def test_each_process_reads_only_its_rows_of_the_single_process_batch(runs):
    from physnets_jax.training.data import prepare_data

    _, data = prepare_data(TEXT)  # the run's data: char tokenizer, last 10% for validation
    for step in range(1, STEPS + 1):
        seen = [runs["pair"][i]["rows"][str(step)] for i in (0, 1)]
        rows = [set(s["rows"]) for s in seen]
        assert len(seen[0]["rows"]) == len(seen[1]["rows"]) == BATCH // 2  # half the batch each
        assert rows[0].isdisjoint(rows[1]) and rows[0] | rows[1] == set(range(BATCH))
        x_all, _ = data.batch_at("train", BATCH, BLOCK, SEED, step)  # what one process reads
        for s in seen:
            np.testing.assert_array_equal(np.asarray(s["x"]), x_all[s["rows"]])


def test_only_process_zero_writes_run_files_and_both_write_checkpoint_shards(runs):
    run_files = ("run.json", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png")
    written = [{pathlib.Path(p).name for p in runs["pair"][i]["written_fresh"]} for i in (0, 1)]
    assert set(run_files) <= written[0]
    assert not set(run_files) & written[1], written[1]
    state = runs["out"] / "two" / "checkpoints" / "2" / "state"
    for i in (0, 1):
        shard = state / f"ocdbt.process_{i}"
        assert shard.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in shard.rglob("*")), shard
    assert sorted(p.name for p in (runs["out"] / "two" / "checkpoints").iterdir()) == ["2", "4"]


def test_checkpoints_move_between_one_and_two_processes(runs):
    out = runs["out"]
    assert "resume" in runs["single"], "the single process was not handed the pair's run folder"
    resumed_in_one = runs["single"]["resume"]
    assert resumed_in_one["rc"] == 0, resumed_in_one["stderr"][-3000:]
    for i in (0, 1):
        assert runs["pair"][i]["resume"]["rc"] == 0, runs["pair"][i]["resume"]["stderr"][-3000:]
    for saved, resumed in (("two", "two_to_one"), ("one", "one_to_two")):
        a, b = losses(out / saved), losses(out / resumed)
        np.testing.assert_allclose([b[3], b[4], b["val"]], [a[3], a[4], a["val"]], rtol=RTOL,
                                   err_msg=f"{saved} resumed at step 2 as {resumed}")


def test_export_of_a_two_process_run_loads_in_both_backends(runs, tmp_path, capsys):
    import torch

    import physnets_jax
    import physnets_torch
    from physnets_jax.training.cli import main

    assert main(["export", str(runs["out"] / "two"), str(tmp_path / "exp")]) == 0
    jm = physnets_jax.load_pretrained(tmp_path / "exp")
    tm = physnets_torch.load_pretrained(tmp_path / "exp")
    tokens = (np.arange(2 * BLOCK, dtype=np.int32).reshape(2, BLOCK) * 7) % jm.cfg.vocab_size
    jax_logits = np.asarray(jm(tokens))
    torch_logits = tm(torch.from_numpy(tokens).long()).detach().numpy()
    np.testing.assert_allclose(jax_logits, torch_logits, atol=1e-5, rtol=1e-5)  # float32, same algorithm
    assert np.abs(jax_logits).max() > 0.1


def test_a_signal_to_one_process_stops_both_after_the_same_step(runs):
    for i in (0, 1):
        result = runs["pair"][i]["interrupt"]
        assert result["rc"] == 130, result["stderr"][-3000:]
    crash_run = runs["out"] / "crash"
    records = [json.loads(line) for line in (crash_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][:2] == [1, 2]  # stopped after step 2 (then resumed below)
    two = losses(runs["out"] / "two")
    np.testing.assert_allclose([r["loss"] for r in records[:2]], [two[1], two[2]], rtol=RTOL)
    assert "2" in {p.name for p in (crash_run / "checkpoints").iterdir()}


def test_a_crashed_process_stops_the_other_instead_of_hanging(runs):
    crash = runs["crash"]
    assert crash["died_at"] is not None and crash["rc"][1] == 7  # process 1 crashed as planned
    assert not (runs["out"] / "pair0-survived").exists()
    assert crash["rc"][0] != 0
    assert "another task died" in crash["stderr"][0]  # JAX's own message when a peer stops responding
    # noticed within a few heartbeat timeouts, not the 300 s the pair was given
    assert crash["ended"] - crash["died_at"] < 12 * HEARTBEAT


def test_bad_input_is_one_error_line_and_writes_nothing(runs):
    single, bad = runs["single"], runs["out"] / "bad"
    expected = {
        "mesh_size": ("data:2 x fsdp:4 = 8 devices", "4 cpu devices"),
        "duplicate_axis": ("axis 'data' is given twice",),
        "batch": ("--batch-size 6", "4 devices of the mesh"),
        "unreachable": ("could not reach the coordinator at 127.0.0.1:",),
        "no_cluster": ("could not start a multi-process run", "JAX_COORDINATOR_ADDRESS"),  # --distributed
    }
    for name, parts in expected.items():
        result = single[name]
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["rc"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, result["stderr"])
        for part in parts:
            assert part in lines[0], (name, lines[0])
    assert json.loads((runs["out"] / "common.json").read_text())["dead_address"] in single["unreachable"]["stderr"]
    assert single["unreachable"]["seconds"] < 30  # --coordinator-timeout 2
    assert not bad.exists() or not any(bad.iterdir()), sorted(p.name for p in bad.iterdir())
