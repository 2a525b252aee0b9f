"""benchmarks/device_check.py: its table arithmetic (tokens/s, MiB, MFU against the measured peak)
and its refusal to run without an accelerator."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import device_check as dc

ROOT = Path(__file__).resolve().parent.parent


def test_table_reports_throughput_memory_and_mfu_by_hand():
    cells = dc.plan_cells(["ripplegpt-pallas"], ["jax", "torch"], [1024], ["bfloat16"])
    assert [(c["backend"], c["batch"]) for c in cells] == [("jax", 16), ("torch", 16)]  # 16,384 tokens
    run = dict(
        hello={"jax": {"version": "jax x", "device": "gpu: H"}},
        checks={},
        peaks={"jax": {"flops": {"bfloat16": 1e15}}, "torch": {"flops": {"bfloat16": 0.5e15}}},
        results={0: dict(params=10_000_000, step_s=0.1, setup_s=5.0, memory_bytes=3 * 2**30, loss=4.0),
                 1: {"note": "error: ValueError: boom"}},
    )
    text = dc.render(cells, run, {}, 1.0, [1024], ["bfloat16"])
    jax_row = next(line for line in text.splitlines() if "| jax | bfloat16 | 1024 |" in line)
    # 16 x 1024 tokens in 0.1 s; ripplegpt small: 6 layers of width 384 mixing over 1024 positions:
    # (6 N + 12 L W d) tokens/s / peak = (6e7 + 12*6*1024*384) * 163,840 / 1e15 = 1.45 %
    assert "| 163,840 | 100.0 | 3,072 | 1.4% |" in jax_row
    assert "error: ValueError: boom" in text
    assert "bfloat16 matmul peak" in text and "jax 1000.0 TFLOP/s" in text


def test_unavailable_rows_are_named_with_the_reason():
    reason = dc.row_unavailable("gateloop-chunked")
    from physnets_core.config import GATELOOP_SCANS

    if "chunked_matmul" in GATELOOP_SCANS:
        assert reason is None
    else:
        assert reason.startswith("skipped: gateloop.scan='chunked_matmul' is not in this version")
    assert dc.row_unavailable("ripplegpt-pallas") is None


@pytest.mark.slow  # two worker processes import jax and torch (~10 s)
@pytest.mark.skipif(os.environ.get("PHYSNETS_DEVICE_CHECK_SMOKE") == "1", reason="smoke mode treats the CPU as a device")
def test_exits_with_a_message_without_an_accelerator():
    import jax
    import torch

    if jax.default_backend() != "cpu" or torch.cuda.is_available():
        pytest.skip("this machine has an accelerator")
    proc = subprocess.run([sys.executable, "benchmarks/device_check.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "needs an accelerator (a GPU or TPU) and found none" in proc.stderr
