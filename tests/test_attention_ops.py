"""Attention kernels against a per-query loop written with numpy, and hand-computed biases."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax.ops.attention import causal_attention as jax_attention
from physnets_jax.ops.attention import ripple_bias as jax_ripple_bias
from physnets_torch.ops.attention import causal_attention as torch_attention


def loop_attention(q, k, v, decay=None):
    """For each head h and query i: softmax_j<=i(q_i.k_j/sqrt(d) - |lambda_h| (i - j)) . v_j."""
    B, H, T, D = q.shape
    out = np.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(T):
                s = np.array([q[b, h, i] @ k[b, h, j] / np.sqrt(D) for j in range(i + 1)])
                if decay is not None:
                    s = s - abs(decay[h]) * (i - np.arange(i + 1))
                w = np.exp(s - s.max())
                out[b, h, i] = (w / w.sum()) @ v[b, h, : i + 1]
    return out


@pytest.mark.parametrize("with_decay", [False, True])
def test_attention_equals_loop(with_decay):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 9, 4)) for _ in range(3))
    decay = np.array([-0.8, 0.3, -2.0]) if with_decay else None
    expected = loop_attention(q, k, v, decay)
    got_jax = jax_attention(*(jnp.asarray(t, jnp.float32) for t in (q, k, v)),
                            decay_H=None if decay is None else jnp.asarray(decay, jnp.float32))
    got_torch = torch_attention(*(torch.from_numpy(t) for t in (q, k, v)),
                                decay_H=None if decay is None else torch.from_numpy(decay))
    np.testing.assert_allclose(np.asarray(got_jax), expected, atol=2e-6)
    np.testing.assert_allclose(got_torch.numpy(), expected, atol=1e-12)


def test_ripple_bias_hand_values():
    # one head, lambda = -0.8: bias_ij = 0.8 * min(j - i, 0)
    bias = np.asarray(jax_ripple_bias(jnp.array([-0.8]), jnp.arange(3), jnp.arange(3)))[0]
    expected = np.array([[0.0, 0.0, 0.0], [-0.8, 0.0, 0.0], [-1.6, -0.8, 0.0]])
    np.testing.assert_allclose(bias, expected, atol=1e-7)


def test_cached_query_positions_match_full_attention():
    """Attending the last 2 queries at positions 5, 6 over a padded 10-slot cache equals rows 5, 6
    of the full computation."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((1, 2, 7, 4)) for _ in range(3))
    decay = np.array([-0.5, 1.2])
    full = loop_attention(q, k, v, decay)[:, :, 5:]
    pad = lambda t: np.concatenate([t, rng.standard_normal((1, 2, 3, 4))], axis=2)  # noqa: E731
    got = torch_attention(torch.from_numpy(q[:, :, 5:]), torch.from_numpy(pad(k)), torch.from_numpy(pad(v)),
                          q_pos_T=torch.tensor([5, 6]), kv_len=7, decay_H=torch.from_numpy(decay))
    np.testing.assert_allclose(got.numpy(), full, atol=1e-12)
