"""JaxModule (a physnets_jax model inside torch through the bridge) vs the native torch twin:
parameter names and values, logits, gradients, and 20 steps of torch.optim.AdamW.

Tolerances (relative to max(1, scale)): float64 1e-10 (same math, two libraries); float32
1e-5 for the 20 training losses (observed ~1e-7). Parameters after 20 steps get 10x the loss
tolerance: Adam's m / sqrt(v) normalises every coordinate, so a rounding-level gradient
difference on a near-zero gradient moves that parameter by up to ~lr (observed 3e-6 in float32,
2e-14 in float64).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from parity_tests.harness import assert_close
from physnets_jax.model import build_model, cast_params
from physnets_jax.state import flat_params
from physnets_torch.bridge import JaxModule
from physnets_torch.convert import load_jax_into_torch
from physnets_torch.losses import cross_entropy
from physnets_torch.model import Decoder

PRESET = "ripplegpt-nano"


def _pair(dtype: torch.dtype, **overrides):
    jm = build_model(PRESET, seed=0, dropout=0.0, **overrides)
    if dtype == torch.float64:
        cast_params(jm, jnp.float64)
    bridged = JaxModule(jm)
    native = Decoder(jm.cfg).to(dtype)
    load_jax_into_torch(jm, native)
    return jm, bridged, native


def _batch(cfg, step: int, batch: int = 2, seq: int = 12):
    """A learnable batch: rows count up by a per-row stride from random starts (mod vocab)."""
    rng = np.random.default_rng(step)
    start = rng.integers(0, cfg.vocab_size, (batch, 1))
    stride = rng.integers(1, 3, (batch, 1))
    tokens = torch.from_numpy((start + stride * np.arange(seq + 1)) % cfg.vocab_size)
    return tokens[:, :-1], tokens[:, 1:]


def test_parameters_are_named_and_laid_out_as_the_torch_twin():
    jm, bridged, native = _pair(torch.float32)
    got, want = bridged.state_dict(), native.state_dict()
    assert list(sorted(got)) == list(sorted(want))
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert torch.equal(got[name], want[name]), name
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in bridged.parameters())
    # both directions of state_dict exchange work (strict)
    native.load_state_dict(bridged.state_dict())
    bridged.load_state_dict(native.state_dict())


def test_logits_and_gradients_match_the_torch_twin(x64):
    jm, bridged, native = _pair(torch.float64)
    x, y = _batch(jm.cfg, 0)  # the training test's shapes: one compile for both
    logits_b = bridged(x)
    logits_n = native(x)
    assert_close(logits_b.detach(), logits_n.detach(), 1e-10, "logits")
    cross_entropy(logits_b, y).backward()
    cross_entropy(logits_n, y).backward()
    for name, p in native.named_parameters():
        assert_close(bridged.get_parameter(name).grad, p.grad, 1e-10, f"grad {name}")


def test_to_jax_returns_the_trained_values():
    jm, bridged, _ = _pair(torch.float32)
    with torch.no_grad():
        for p in bridged.parameters():
            p.mul_(1.5)
    before, after = flat_params(jm), flat_params(bridged.to_jax())
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name] * np.float32(1.5), err_msg=name)


@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["float64", "float32"]
)
def test_adamw_training_through_the_bridge_matches_native_torch(dtype, tol, request):
    if dtype == torch.float64:
        request.getfixturevalue("x64")
    jm, bridged, native = _pair(dtype)
    opts = [torch.optim.AdamW(m.parameters(), lr=3e-3, betas=(0.9, 0.99)) for m in (bridged, native)]
    losses = {"bridge": [], "native": []}
    for step in range(20):
        x, y = _batch(jm.cfg, step)
        for key, model, opt in zip(losses, (bridged, native), opts, strict=True):
            opt.zero_grad()
            loss = cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses[key].append(loss.item())
    assert losses["native"][-1] < losses["native"][0] - 0.1, "the run should actually learn"
    assert_close(losses["bridge"], losses["native"], tol, "losses over 20 AdamW steps")
    for name, p in native.named_parameters():
        assert_close(bridged.get_parameter(name).detach(), p.detach(), tol * 10, f"param {name}")


def test_dropout_follows_torch_train_and_eval_modes():
    jm = build_model(PRESET, seed=0, dropout=0.5)
    bridged = JaxModule(jm)
    native = Decoder(jm.cfg)
    load_jax_into_torch(jm, native)
    x, _ = _batch(jm.cfg, 0)
    with torch.no_grad():
        a, b = bridged(x), bridged(x)  # training mode: fresh dropout masks each call
        assert not torch.equal(a, b)
        bridged.eval()
        native.eval()
        c, d = bridged(x), bridged(x)
        assert torch.equal(c, d)
        assert_close(c, native(x), 1e-5, "eval logits")
