"""One process of tests/test_multiprocess.py (run as a script, never collected by pytest).

    python tests/multiprocess_worker.py single OUT_DIR   # 1 process, 4 devices
    python tests/multiprocess_worker.py pair OUT_DIR     # one of 2 processes (JAX_* variables set), 2 devices each

Each runs several `train_jax.py` commands (physnets_jax.training.cli.train_main) in one
interpreter, so the compiled train step is shared between them, and writes what it observed as
JSON into OUT_DIR: exit codes and stderr of each command, the batch rows this process read,
and the files that Python code of this process opened for writing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import signal
import sys
import time

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
written: list[str] = []


def _audit(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
    if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and flags & WRITE_FLAGS):
        written.append(os.fsdecode(args[0]))


def run_cli(argv: list[str]) -> dict:
    """train_main(argv) with stderr captured: {'rc', 'stderr', 'seconds', 'cpu_seconds'}."""
    from physnets_jax.training.cli import train_main

    err = io.StringIO()
    t0, c0 = time.perf_counter(), time.process_time()
    with contextlib.redirect_stderr(err):
        rc = train_main(argv)
    sys.stderr.write(err.getvalue())
    return {"rc": rc, "stderr": err.getvalue(), "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0}


def record_rows(log: dict):
    """Wrap TokenData.batch_at to note, per training step, the rows read and their tokens."""
    from physnets_jax.training.data import TokenData

    original = TokenData.batch_at

    def batch_at(self, split, batch_size, block_size, seed, step, stream=0, rows=None):
        x, y = original(self, split, batch_size, block_size, seed, step, stream, rows=rows)
        if split == "train" and stream == 0 and log.get("on", True):
            log.setdefault(str(step), {"rows": None if rows is None else [int(r) for r in rows],
                                       "x": x.tolist()})
        return x, y

    TokenData.batch_at = batch_at
    return original


def at_step(step: int, action):
    """Call action() when this process reads the training batch of `step`."""
    from physnets_jax.training.data import TokenData

    original = TokenData.batch_at

    def batch_at(self, split, batch_size, block_size, seed, s, stream=0, rows=None):
        if split == "train" and stream == 0 and s == step:
            action()
        return original(self, split, batch_size, block_size, seed, s, stream, rows=rows)

    TokenData.batch_at = batch_at
    return original


def crash(marker: pathlib.Path):
    """Exit abruptly (no cleanup, like a crash), noting the time in `marker` first."""
    marker.write_text(str(time.time()))
    os._exit(7)


def signal_file(path: pathlib.Path, text: str) -> None:
    """Write a file another process polls for, atomically: it must never see it empty."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def wait_for(marker: pathlib.Path, timeout: float = 900) -> str:
    """The text of `marker` once the test has written it (a copied run folder is ready)."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{marker} did not appear within {timeout} s")
        time.sleep(0.1)
    return marker.read_text().strip()


def main() -> None:
    t_start = time.process_time()
    role, out = sys.argv[1], pathlib.Path(sys.argv[2])
    common = json.loads((out / "common.json").read_text())
    base = common["args"]
    result: dict = {}
    rows: dict = {}

    if role == "single":
        # bad input first: each must stop before anything is written (and before JAX starts,
        # for the unreachable coordinator, so this interpreter can still train afterwards)
        bad = out / "bad"
        os.environ.update({"JAX_COORDINATOR_ADDRESS": common["dead_address"], "JAX_NUM_PROCESSES": "2",
                           "JAX_PROCESS_ID": "1"})
        result["unreachable"] = run_cli([*base, "--run-dir", str(bad / "coordinator"), "--coordinator-timeout", "2"])
        for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            del os.environ[key]
        result["no_cluster"] = run_cli([*base, "--run-dir", str(bad / "no_cluster"), "--distributed"])
        cases = {
            "mesh_size": ["--mesh", "data:2,fsdp:4"],
            "duplicate_axis": ["--mesh", "data:2,data:2"],
            "batch": ["--mesh", "data:2,fsdp:2", "--batch-size", "6"],
        }
        for name, extra in cases.items():
            result[name] = run_cli([*base, "--run-dir", str(bad / name), *extra])
        # the single-process reference run, then (once the pair is done) a resume of the pair's run
        result["fresh"] = run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "one")])
        signal_file(out / "single-fresh.json", json.dumps(result))
        if wait_for(out / "two_to_one-ready") == "resume":
            result["resume"] = run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "two_to_one"),
                                        "--resume-step", "2"])
        result["cpu_seconds"] = time.process_time() - t_start
        (out / "single.json").write_text(json.dumps(result))
        return

    pid = int(os.environ["JAX_PROCESS_ID"])
    sys.addaudithook(_audit)
    record_rows(rows)
    dist = ["--heartbeat-timeout", str(common["heartbeat"]), "--coordinator-timeout", "60"]
    result["fresh"] = run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "two"), *dist])
    result["written_fresh"] = sorted(set(written))
    rows["on"] = False
    signal_file(out / f"pair{pid}-fresh-done", str(result["fresh"]["rc"]))
    wait_for(out / "one_to_two-ready")
    result["resume"] = run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "one_to_two"),
                                "--resume-step", "2", *dist])
    result["rows"] = {k: v for k, v in rows.items() if k != "on"}
    result["cpu_seconds"] = time.process_time() - t_start
    # a signal to process 1 alone stops both after the same step, with a checkpoint (Ctrl-C, SIGTERM)
    from physnets_jax.training.data import TokenData

    if pid == 1:
        original = at_step(2, lambda: signal.raise_signal(signal.SIGINT))
    result["interrupt"] = run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "crash"), *dist])
    if pid == 1:
        TokenData.batch_at = original
    (out / f"pair{pid}.json").write_text(json.dumps(result))
    # last: process 1 crashes while reading step 3 of the resumed run; process 0 must not hang
    if pid == 1:
        at_step(3, lambda: crash(out / "died_at"))
    run_cli([*base, "--mesh", "data:2,fsdp:2", "--run-dir", str(out / "crash"), "--resume", *dist])
    (out / f"pair{pid}-survived").write_text("the run ended normally although the other process died")


if __name__ == "__main__":
    main()
