"""physnets_jax.layers.dropout: 16-bit draws, keep frequency and exact expectation, nnx.Dropout's
interface (deterministic, broadcast_dims, rngs at call), and bad keep probabilities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from physnets_jax.layers.dropout import Dropout, effective_keep_prob, keep_mask, keep_threshold


def test_keep_threshold_is_the_rounded_multiple_of_one_65536th():
    assert keep_threshold(0.8) == 52429 and effective_keep_prob(0.8) == 52429 / 65536
    assert keep_threshold(1.0) == 65536 and keep_threshold(1e-9) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"keep_prob={bad} must be in"):
            keep_threshold(bad)


def test_keep_mask_frequency_and_independence():
    # 2^20 draws: the kept fraction is within 5 standard errors of 0.7; the two 16-bit halves of
    # each word (first and second half of the flat mask) are uncorrelated; odd sizes work.
    mask = np.asarray(keep_mask(jax.random.key(0), 0.7, (1024, 1024)))
    p = effective_keep_prob(0.7)
    assert abs(mask.mean() - p) < 5 * np.sqrt(p * (1 - p) / mask.size)
    flat = mask.reshape(-1).astype(float)
    first, second = flat[: flat.size // 2], flat[flat.size // 2:]
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(first.size)
    odd = keep_mask(jax.random.key(1), 0.5, (3, 5, 7))
    assert odd.shape == (3, 5, 7) and odd.dtype == jnp.bool_
    assert not np.array_equal(np.asarray(keep_mask(jax.random.key(2), 0.5, (64,))), np.asarray(keep_mask(jax.random.key(3), 0.5, (64,))))


def test_dropout_scales_kept_values_to_an_exact_expectation():
    x = jnp.full((512, 512), 3.0)
    drop = Dropout(0.2, rngs=nnx.Rngs(dropout=0))
    y = np.asarray(drop(x))
    kept = y != 0
    np.testing.assert_allclose(y[kept], 3.0 * 65536 / 52429, rtol=1e-6)  # scaled by 1 / effective keep prob
    assert abs(kept.mean() - 52429 / 65536) < 5 * np.sqrt(0.16 / kept.size)
    assert not np.array_equal(np.asarray(drop(x)), y)  # the stream advances per call


def test_dropout_keeps_nnx_dropouts_interface():
    x = jnp.ones((4, 6, 8))
    assert Dropout(0.5, deterministic=True, rngs=nnx.Rngs(0))(x) is x
    assert Dropout(0.0, rngs=nnx.Rngs(0))(x) is x
    assert np.all(np.asarray(Dropout(0.5, rngs=nnx.Rngs(0))(x, deterministic=True)) == 1)
    assert np.all(np.asarray(Dropout(1.0, rngs=nnx.Rngs(0))(x)) == 0)
    shared = np.asarray(Dropout(0.5, broadcast_dims=(-1,), rngs=nnx.Rngs(0))(x))
    assert np.all(shared == shared[..., :1])  # one decision per (4, 6) position, shared over the last axis
    with_key = np.asarray(Dropout(0.5)(x, rngs=jax.random.key(4)))
    np.testing.assert_array_equal(with_key != 0, np.asarray(keep_mask(jax.random.key(4), 0.5, x.shape)))
    with pytest.raises(ValueError, match="Dropout is active .* has no rngs"):
        Dropout(0.5)(x)
