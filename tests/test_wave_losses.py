"""QFE loss (physics_optim.py): equals its numpy reference, equals CE at lambda 0, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax import losses as jlosses
from physnets_torch import losses as tlosses
from tests import wave_reference as ref


def _data(V, T=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, T, V)) * 2, rng.integers(0, V, (2, T))


@pytest.mark.parametrize("V", [17, 300])
def test_qfe_matches_numpy_reference(V, x64):
    logits, targets = _data(V)
    proj = jlosses.qfe_projection(V) if V > 256 else None
    total, ce, coherence = ref.qfe(logits, targets, lam=0.05, thr=0.01, projection=proj)
    assert coherence > 0
    got = jlosses.qfe_loss(jnp.asarray(logits), jnp.asarray(targets))
    np.testing.assert_allclose(float(got), total, rtol=1e-12)
    tgot = tlosses.qfe_loss(torch.from_numpy(logits), torch.from_numpy(targets))
    np.testing.assert_allclose(float(tgot), total, rtol=1e-12)


def test_qfe_temperature_and_threshold(x64):
    logits, targets = _data(9)
    _, _, coherence = ref.qfe(logits, targets, thr=0.2, temperature=2.0)
    got = jlosses.qfe_coherence(jnp.asarray(logits), jnp.asarray(targets), amplitude_threshold=0.2, temperature=2.0)
    np.testing.assert_allclose(float(got), coherence, rtol=1e-12)


def test_qfe_equals_cross_entropy_at_lambda_zero():
    logits, targets = _data(300)
    jl, jt = jnp.asarray(logits, jnp.float32), jnp.asarray(targets)
    assert float(jlosses.qfe_loss(jl, jt, lambda_coherence=0.0)) == float(jlosses.cross_entropy(jl, jt))
    tl, tt = torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(targets)
    assert float(tlosses.qfe_loss(tl, tt, lambda_coherence=0.0)) == float(tlosses.cross_entropy(tl, tt))


def test_projection_is_seeded_and_shared():
    a = jlosses.qfe_projection(1000)
    b = tlosses.qfe_projection(1000)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, np.random.default_rng(0).standard_normal((1000, 256)) / 16.0)
    assert not np.array_equal(a, jlosses.qfe_projection(1000, seed=1))


def test_qfe_gradient_is_finite_with_masked_bins():
    """One-hot targets leave many FFT bins below the threshold; their (masked) phases must not NaN."""
    logits, targets = _data(5, T=8)
    targets[:] = 2  # constant targets: every non-DC bin of the target spectrum is exactly zero
    g = jax.grad(lambda x: jlosses.qfe_loss(x, jnp.asarray(targets), lambda_coherence=1.0))(jnp.asarray(logits))
    assert np.isfinite(np.asarray(g)).all()
    t = torch.from_numpy(logits).requires_grad_(True)
    tlosses.qfe_loss(t, torch.from_numpy(targets), lambda_coherence=1.0).backward()
    assert torch.isfinite(t.grad).all()


def test_projection_vocab_mismatch_raises():
    logits, targets = _data(300)
    bad = np.ones((299, 256))
    with pytest.raises(ValueError, match=r"projection has shape \(299, 256\) but the logits have vocab 300"):
        jlosses.qfe_loss(jnp.asarray(logits), jnp.asarray(targets), projection=bad)
    with pytest.raises(ValueError, match=r"projection has shape \(299, 256\) but the logits have vocab 300"):
        tlosses.qfe_loss(torch.from_numpy(logits), torch.from_numpy(targets), projection=bad)
    with pytest.raises(ValueError, match="does not match targets shape"):
        jlosses.qfe_loss(jnp.asarray(logits), jnp.asarray(targets[:, :3]))
