"""--mesh: data-parallel and FSDP training on 4 simulated CPU devices gives the single-device
losses (in a subprocess: the device count is fixed when JAX starts)."""

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from physnets_jax.training.data import TokenData
from physnets_jax.training.sharding import (
    array_spec,
    check_batch,
    distributed_requested,
    initialize_distributed,
    local_rows,
    make_mesh,
    parse_mesh,
    split_address,
    wait_for_coordinator,
)

SCRIPT = r"""
import json, jax, numpy as np
from physnets_jax.training.data import TokenData
from physnets_jax.model import build_model
from physnets_jax.training.sharding import make_mesh
from physnets_jax.training.train import TrainConfig, train

assert len(jax.devices()) == 4, jax.devices()
rng = np.random.default_rng(0)
data = TokenData(rng.integers(0, 24, 6000).astype(np.int32))
tc = TrainConfig(steps=3, batch_size=8, lr=3e-3, warmup_steps=1, eval_interval=3, eval_batches=1, log_interval=1)
out = {}
for spec in (None, "data:2,fsdp:2"):  # both axes at once (each mesh costs a compile)
    model = build_model("ripplegpt-nano", seed=0, vocab_size=24, block_size=16, dropout=0.0)
    mesh = make_mesh(spec) if spec else None
    summary = train(model, data, tc, progress=False, mesh=mesh, print_fn=lambda s: None)
    kernel = model.blocks[0].mlp.fc1.kernel[...]
    out[str(spec)] = {"losses": summary["losses"], "val": summary["val_loss"], "spec": str(getattr(kernel.sharding, "spec", "single"))}
print("RESULT" + json.dumps(out))
"""


def test_sharded_losses_equal_single_device():
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"  # keep conftest's
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    ref = out["None"]
    for spec in ("data:2,fsdp:2",):
        # float32; the sharded batch mean and gradient all-reduce sum in another order: ~1e-7 relative
        assert out[spec]["losses"] == pytest.approx(ref["losses"], rel=2e-5), spec
        assert out[spec]["val"] == pytest.approx(ref["val"], rel=2e-5), spec
    assert "fsdp" in out["data:2,fsdp:2"]["spec"]  # parameters really are split
    assert out["None"]["spec"] == "single"


def test_mesh_spec_parsing_and_param_rule():
    assert parse_mesh("data:2,fsdp:2") == {"data": 2, "fsdp": 2}
    assert parse_mesh("fsdp:-1") == {"data": 1, "fsdp": -1}
    with pytest.raises(ValueError, match="AXIS one of data, fsdp"):
        parse_mesh("tensor:2")
    with pytest.raises(ValueError, match="must be an integer"):
        parse_mesh("data:two")
    assert tuple(array_spec((64, 128), 2)) == (None, "fsdp")  # the largest divisible dimension
    assert tuple(array_spec((96, 63), 4)) == ("fsdp", None)
    assert tuple(array_spec((7,), 2)) == ()  # small: replicated


def test_mesh_refuses_a_repeated_axis_and_names_device_counts():
    with pytest.raises(ValueError, match="axis 'data' is given twice"):
        parse_mesh("data:2,data:2")
    one = jax.devices()[:1]
    with pytest.raises(ValueError, match=rf"data:2 x fsdp:1 = 2 devices, but there are 1 {jax.default_backend()} devices"):
        make_mesh("data:2", devices=one)
    with pytest.raises(ValueError, match=r"not divisible by the other axis's size 3"):
        make_mesh("data:3,fsdp:-1", devices=one)


def test_batch_rows_and_divisibility_on_one_device():
    mesh = make_mesh("data:1", devices=jax.devices()[:1])
    check_batch(mesh, 5)  # one device takes any batch
    check_batch(None, 7)
    assert local_rows(mesh, 6).tolist() == list(range(6))


def test_check_batch_names_both_numbers():
    class FourDevices:  # check_batch reads only .size and .shape
        size, shape = 4, {"data": 2, "fsdp": 2}

    with pytest.raises(ValueError, match=r"--batch-size 6 is not divisible by the 4 devices of the mesh \(data:2 x fsdp:2\)"):
        check_batch(FourDevices(), 6)
    check_batch(FourDevices(), 8)


def test_rows_of_a_batch_are_the_same_rows_of_the_whole_batch():
    tokens = np.arange(500, dtype=np.int32) % 37
    data = TokenData.from_splits(tokens, tokens[:100])
    x, y = data.batch_at("train", 8, 16, seed=3, step=5)
    xr, yr = data.batch_at("train", 8, 16, seed=3, step=5, rows=np.array([1, 6, 7]))
    np.testing.assert_array_equal(xr, x[[1, 6, 7]])
    np.testing.assert_array_equal(yr, y[[1, 6, 7]])
    # the windows are the ones numpy's generator draws for (seed, stream 0, step)
    starts = np.random.default_rng([3, 0, 5]).integers(0, len(tokens) - 16, size=8)
    np.testing.assert_array_equal(x[:, 0], tokens[starts])
    assert data.batch_at("train", 8, 16, seed=3, step=5, rows=np.array([], np.int64))[0].shape == (0, 16)


def test_distributed_settings_are_checked_before_jax_starts(monkeypatch):
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_NTASKS",
                "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed_requested() and not initialize_distributed()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one Slurm task is not a multi-process run
    assert not distributed_requested()
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="set both JAX_NUM_PROCESSES and JAX_PROCESS_ID"):
        initialize_distributed()
    monkeypatch.setenv("JAX_PROCESS_ID", "2")
    with pytest.raises(ValueError, match=r"JAX_PROCESS_ID=2 must be in \[0, JAX_NUM_PROCESSES=2\)"):
        initialize_distributed()
    monkeypatch.setenv("JAX_PROCESS_ID", "x")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='x' must be an integer"):
        initialize_distributed()
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        split_address("no-port")
    assert split_address("[::1]:80") == ("::1", 80)
    assert not jax.distributed.is_initialized()


def test_unreachable_coordinator_is_named_after_a_bounded_wait():
    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"could not reach the coordinator at 127.0.0.1:{port} within 0.5 s"):
        wait_for_coordinator(f"127.0.0.1:{port}", 0.5)
    assert time.monotonic() - t0 < 5
    with socket.socket() as server:  # one that listens is accepted at once
        server.bind(("127.0.0.1", 0))
        server.listen()
        wait_for_coordinator(f"127.0.0.1:{server.getsockname()[1]}", 5)
