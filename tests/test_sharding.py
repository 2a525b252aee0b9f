"""--mesh: data-parallel and FSDP training on 4 simulated CPU devices gives the single-device
losses (in a subprocess: the device count is fixed when JAX starts)."""

import json
import os
import subprocess
import sys

import pytest

from physnets_jax.training.sharding import array_spec, parse_mesh

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
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
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
