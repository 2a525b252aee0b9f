"""The layer scan (scan_layers=True) computes what the unrolled loop of blocks computes (the
default), forward and gradients, with dropout drawing the same masks, float64."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from physnets_core.config import ModelConfig, preset
from physnets_jax.losses import cross_entropy
from physnets_jax.model import Decoder, cast_params


def test_default_is_the_unrolled_loop():
    assert ModelConfig().scan_layers is False


def _loss_grads_and_streams(cfg, tokens):
    model = cast_params(Decoder(cfg, rngs=nnx.Rngs(params=0, dropout=1)), np.float64)
    loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(tokens), tokens))(model)
    counts = [np.asarray(c[...]) for c in jax.tree.leaves(nnx.state(model, nnx.RngCount))]
    return float(loss), grads, counts


@pytest.mark.parametrize("name", ["ripplegpt", "gateloop", "wave_gpt"])
def test_scan_equals_loop_with_dropout(name, x64):
    cfg = preset(name, "nano", dropout=0.1, n_layer=3, block_size=16)
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 16)).astype(np.int32)
    loop_loss, loop_grads, loop_counts = _loss_grads_and_streams(cfg, tokens)
    scan_loss, scan_grads, scan_counts = _loss_grads_and_streams(dataclasses.replace(cfg, scan_layers=True), tokens)
    # dropout is active: the loss differs from the same model's eval-mode loss
    eval_model = cast_params(Decoder(dataclasses.replace(cfg, dropout=0.0), rngs=nnx.Rngs(params=0, dropout=1)), np.float64)
    assert abs(loop_loss - float(cross_entropy(eval_model(tokens), tokens))) > 1e-6
    assert abs(scan_loss - loop_loss) < 1e-12
    loop_leaves = jax.tree_util.tree_leaves_with_path(loop_grads)
    for (path, a), b in zip(loop_leaves, jax.tree.leaves(scan_grads), strict=True):
        assert a.dtype == np.float64, path
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-12, err_msg=str(path))
    # both advance every block's dropout stream by the same number of draws
    assert any(int(c) > 0 for c in loop_counts)
    for a, b in zip(loop_counts, scan_counts, strict=True):
        np.testing.assert_array_equal(b, a)
