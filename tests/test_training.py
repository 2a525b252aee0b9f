"""Trainer: exact resume after a signal, checkpoints (corrupt, other config, NaN), optimizers and
losses from TrainConfig, length evaluation. Tiny models, few steps."""

import json
import os
import pathlib
import shutil
import signal

import jax
import numpy as np
import pytest

from physnets_jax.model import build_model
from physnets_jax.training.checkpoint import Checkpointer, CheckpointError
from physnets_jax.training.data import TokenData
from physnets_jax.training.train import (
    TrainConfig,
    TrainingDiverged,
    format_length_table,
    length_eval,
    make_optimizer,
    train,
)

VOCAB = 24


@pytest.fixture(scope="module")
def data():
    """Random tokens with some structure (a repeating pattern plus noise)."""
    rng = np.random.default_rng(0)
    base = np.tile(np.arange(VOCAB), 300)
    noise = rng.integers(0, VOCAB, base.size)
    tokens = np.where(rng.random(base.size) < 0.3, noise, base).astype(np.int32)
    return TokenData(tokens, val_fraction=0.2)


def tiny(dropout=0.1, **kw):
    """ripplegpt nano with a small vocabulary (dropout on, so RNG state matters for resume)."""
    return build_model("ripplegpt-nano", seed=3, vocab_size=VOCAB, block_size=16, dropout=dropout, **kw)


TC = TrainConfig(steps=8, batch_size=4, lr=3e-3, warmup_steps=2, eval_interval=4, eval_batches=2,
                 log_interval=1, seed=7, ckpt_interval=4)


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """An uninterrupted run of TC (checkpoints at steps 4 and 8)."""
    ckpts = tmp_path_factory.mktemp("full") / "ckpt"
    summary = train(tiny(), data, TC, progress=False, checkpoint_dir=ckpts)
    assert summary["loss_steps"] == list(range(1, 9)) and Checkpointer(ckpts).steps() == [4, 8]
    return summary, ckpts


def test_resume_after_sigint_reproduces_losses(data, full, tmp_path):
    full, _ = full

    def interrupt(record):
        if record["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real signal, handled by the trainer

    ckpts = tmp_path / "cut"
    first = train(tiny(), data, TC, progress=False, checkpoint_dir=ckpts, on_log=interrupt,
                  metrics_path=tmp_path / "m.jsonl")
    assert first["interrupted"] == "SIGINT" and first["steps"] == 3
    assert Checkpointer(ckpts).steps() == [3]
    second = train(tiny(), data, TC, progress=False, checkpoint_dir=ckpts, resume=True,
                   metrics_path=tmp_path / "m.jsonl")
    assert second["start_step"] == 3 and second["loss_steps"] == list(range(4, 9))
    assert first["losses"] + second["losses"] == full["losses"]  # bitwise, not approximately
    assert second["val_loss"] == full["val_loss"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # metrics continue without duplicates


def test_corrupt_checkpoint_is_reported_and_older_one_usable(data, full, tmp_path):
    full, source = full
    ckpts = tmp_path / "ckpt"
    shutil.copytree(source, ckpts)
    for f in (ckpts / "8" / "state").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"8 is corrupt.*previous checkpoint \(step 4\) is usable"):
        train(tiny(), data, TC, progress=False, checkpoint_dir=ckpts, resume=True)
    resumed = train(tiny(), data, TC, progress=False, checkpoint_dir=ckpts, resume=4)
    assert resumed["loss_steps"] == [5, 6, 7, 8] and resumed["losses"] == full["losses"][4:]
    assert Checkpointer(ckpts).steps() == [4, 8]  # the corrupt step 8 was replaced by a good one
    Checkpointer(ckpts).restore_arrays(8)


def test_checkpoint_of_other_config_says_what_differs(data, full):
    _, ckpts = full
    other = build_model("ripplegpt-nano", seed=3, vocab_size=VOCAB, block_size=16, dropout=0.1, n_embd=64)
    with pytest.raises(CheckpointError, match=r"model n_embd: checkpoint 32, current 64"):
        train(other, data, TC, progress=False, checkpoint_dir=ckpts, resume=True)
    with pytest.raises(CheckpointError, match=r"train optimizer: checkpoint 'adamw', current 'sgd'"):
        train(tiny(), data, TC.replace(optimizer="sgd"), progress=False, checkpoint_dir=ckpts, resume=True)
    assert Checkpointer(ckpts).steps() == [4, 8]  # nothing was written


def test_nan_loss_stops_naming_the_step_and_keeps_last_good_checkpoint(data, tmp_path):
    tc = TC.replace(steps=40, optimizer="sgd", momentum=0.0, lr=1e12, warmup_steps=0, grad_clip=0.0,
                    schedule="constant", ckpt_interval=1, eval_interval=1000)
    with pytest.raises(TrainingDiverged, match=r"at step (\d+).*Last good checkpoint: .*step") as err:
        train(tiny(dropout=0.0), data, tc, progress=False, checkpoint_dir=tmp_path)
    ckpt = Checkpointer(tmp_path)
    leaves, meta = ckpt.restore_arrays()
    assert all(np.isfinite(x).all() for x in leaves if np.issubdtype(x.dtype, np.floating))
    assert f"step {meta['step']})" in str(err.value)


@pytest.mark.parametrize(
    "changes",
    [dict(optimizer="sgd", condition="schedule", loss="qfe"), dict(optimizer="rgd", rgd_warmup=1, condition="learned")],
)
def test_optimizers_and_losses_from_config(data, changes):
    tc = TC.replace(steps=2, eval_interval=100, ckpt_interval=0, **changes)
    out = train(tiny(dropout=0.0, n_layer=1), data, tc, progress=False)
    assert len(out["losses"]) == 2 and np.isfinite(out["losses"]).all()


def test_weight_decay_mask_and_bad_options():
    model = tiny()
    from flax import nnx

    params = nnx.state(model, nnx.Param)
    tx = make_optimizer(TC.replace(lr=1.0, weight_decay=0.5, grad_clip=0.0, warmup_steps=0, schedule="constant", optimizer="sgd", momentum=0.0))
    state = tx.init(params)
    zeros = jax.tree.map(np.zeros_like, params)
    updates, _ = tx.update(zeros, state, params)
    flat_u = jax.tree.leaves(updates)
    flat_p = jax.tree.leaves(params)
    for u, p in zip(flat_u, flat_p, strict=True):
        expected = -0.5 * np.asarray(p) if p.ndim >= 2 else np.zeros_like(p)  # norms, biases, gains: no decay
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="optimizer='lion' is not known; valid choices: adamw, sgd, rgd"):
        TrainConfig(optimizer="lion")
    with pytest.raises(ValueError, match="loss='mse' is not known; valid choices: ce, qfe"):
        TrainConfig(loss="mse")


def test_length_eval_table(data):
    ripple = tiny(dropout=0.0)
    gpt = build_model("gpt-nano", vocab_size=VOCAB, block_size=16)
    rows = length_eval(ripple, data, [48], batch_size=2, batches=1)
    assert np.isfinite(rows[0]["val_loss"])  # beyond the training block
    rows = length_eval(gpt, data, [16, 48], batch_size=2, batches=1)
    assert "val_loss" in rows[0] and "cannot extrapolate" in rows[1]["note"]
    table = format_length_table(rows, 16)
    assert "| 16 (train block) |" in table and "cannot extrapolate" in table


def test_checkpointer_keeps_last_k(tmp_path):
    ck = Checkpointer(tmp_path, keep=2)
    tree = {"w": np.arange(3.0, dtype=np.float32), "key": jax.random.key(1)}
    for s in (1, 2, 3):
        ck.save(s, tree, {"x": s})
    assert ck.steps() == [2, 3]
    restored, meta = ck.restore(None, tree)
    np.testing.assert_array_equal(restored["w"], tree["w"])
    assert jax.random.key_data(restored["key"]).tolist() == jax.random.key_data(tree["key"]).tolist()
    assert not list(pathlib.Path(tmp_path).glob("*tmp*"))  # no half-written folders left
    with pytest.raises(CheckpointError, match="no checkpoint for step 1.*available steps: 2, 3"):
        ck.restore(1, tree)


@pytest.mark.parametrize("name", ["classic", "gateloop", "gateloop-enwik8", "gpt", "ripplegpt", "wave_gpt",
                                  "wave_gpt-headline"])
def test_parameters_are_strongly_typed(name):
    """A weakly typed parameter (e.g. jnp.full with a Python float) comes out of the first optimizer
    step strongly typed, so the jitted step compiled a second time on step 2 (seconds per run)."""
    from flax import nnx

    weak = [jax.tree_util.keystr(path) for path, leaf in
            jax.tree_util.tree_leaves_with_path(nnx.state(build_model(f"{name}-nano", seed=0), nnx.Param))
            if jax.typeof(leaf).weak_type]
    assert weak == []


def test_train_step_keeps_its_input_types(data):
    """The step's outputs have exactly the avals (shape, dtype, weak type) of its inputs, so the
    second call reuses the first call's executable."""
    from flax import nnx

    from physnets_jax.training.train import train_step

    model = tiny(dropout=0.0)
    tx = make_optimizer(TrainConfig(steps=4, warmup_steps=1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = jax.jit(tx.init)(params)
    x = jax.numpy.asarray(data.train[:64].reshape(4, 16))
    before = jax.tree.map(jax.typeof, (params, rest, opt_state))
    params, rest, opt_state, _ = train_step(graphdef, tx, params, rest, opt_state, x, x)
    assert jax.tree.map(jax.typeof, (params, rest, opt_state)) == before
