"""JaxModule (a physnets_jax model inside torch through the bridge) vs the native torch twin:
parameter names and values, logits, gradients, and 20 steps of torch.optim.AdamW.

Tolerances: float64 1e-10 relative (same math, two libraries). The 20-step float32 training
run compares losses at 1e-4 relative: Adam divides by sqrt(v), which amplifies the ~1e-7
per-step rounding differences between XLA and torch kernels over the steps.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from parity_tests.harness import assert_close
from physnets_jax.model import build_model, cast_params
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
    rng = np.random.default_rng(step)
    tokens = torch.from_numpy(rng.integers(0, cfg.vocab_size, (batch, seq + 1)))
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
    x, y = _batch(jm.cfg, 0, batch=2, seq=9)
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
    x, _ = _batch(jm.cfg, 1)
    out_jax = np.asarray(bridged.to_jax()(jnp.asarray(x.numpy())))
    with torch.no_grad():
        out_torch = bridged(x).numpy()
    assert_close(out_jax, out_torch, 1e-6, "to_jax logits")


@pytest.mark.parametrize(
    "dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)], ids=["float64", "float32"]
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
    x, _ = _batch(jm.cfg, 0)
    with torch.no_grad():
        a, b = bridged(x), bridged(x)  # training mode: fresh dropout masks each call
        assert not torch.equal(a, b)
        bridged.eval()
        c, d = bridged(x), bridged(x)
    assert torch.equal(c, d)
    jm.eval()
    assert_close(c, np.asarray(jm(jnp.asarray(x.numpy()))), 1e-6, "eval logits")
