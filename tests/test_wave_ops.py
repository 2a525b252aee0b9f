"""Chunked causal linear attention equals its quadratic reference (and the state carries over)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax.ops import linear_attention as jla
from physnets_torch.ops import linear_attention as tla


def _inputs(T, F=3, D=4, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.1, 2.0, (2, 2, T, F))
    k = rng.uniform(0.1, 2.0, (2, 2, T, F))
    v = rng.standard_normal((2, 2, T, D))
    return q, k, v


@pytest.mark.parametrize("T, chunk", [(1, 4), (7, 4), (8, 4), (5, 16), (13, 1)])
@pytest.mark.parametrize("normalize", [True, False])
def test_chunked_equals_quadratic_reference(T, chunk, normalize, x64):
    q, k, v = _inputs(T)
    want = np.asarray(jla.causal_linear_attention_quadratic(*map(jnp.asarray, (q, k, v)), normalize=normalize))
    got = np.asarray(jla.causal_linear_attention(*map(jnp.asarray, (q, k, v)), normalize=normalize, chunk_size=chunk))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    tgot = tla.causal_linear_attention(tq, tk, tv, normalize=normalize, chunk_size=chunk).numpy()
    np.testing.assert_allclose(tgot, want, rtol=1e-12, atol=1e-12)
    twant = tla.causal_linear_attention_quadratic(tq, tk, tv, normalize=normalize).numpy()
    np.testing.assert_allclose(twant, want, rtol=1e-12, atol=1e-12)


def test_quadratic_reference_against_a_loop():
    q, k, v = _inputs(5)
    want = np.zeros_like(v)
    for t in range(5):
        w = np.einsum("bhf,bhsf->bhs", q[:, :, t], k[:, :, : t + 1])
        want[:, :, t] = np.einsum("bhs,bhsd->bhd", w, v[:, :, : t + 1]) / (w.sum(-1)[..., None] + 1e-6)
    got = tla.causal_linear_attention_quadratic(*(torch.from_numpy(a) for a in (q, k, v))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_state_passing_splits_a_sequence(x64):
    q, k, v = _inputs(11)
    full = np.asarray(jla.causal_linear_attention(*map(jnp.asarray, (q, k, v)), chunk_size=3))
    a, state = jla.causal_linear_attention(*(jnp.asarray(x[:, :, :6]) for x in (q, k, v)), chunk_size=3, return_state=True)
    b = jla.causal_linear_attention(*(jnp.asarray(x[:, :, 6:]) for x in (q, k, v)), chunk_size=4, state=state)
    np.testing.assert_allclose(np.concatenate([a, b], 2), full, rtol=1e-12)
    S = np.einsum("bhtf,bhtd->bhfd", q[:, :, :0].sum(2, keepdims=True) * 0 + k[:, :, :6], v[:, :, :6])
    np.testing.assert_allclose(np.asarray(state[0]), S, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(state[1]), k[:, :, :6].sum(2), rtol=1e-12)


def test_memory_is_linear_in_T():
    """No (B, H, T, F, D) intermediate: every buffer of the chunked form is O(T) (here <= T * 64)."""
    import re

    import jax

    def biggest(T):
        q = jnp.zeros((1, 1, T, 16))
        text = jax.jit(lambda a, b, c: jla.causal_linear_attention(a, b, c, chunk_size=64)).lower(q, q, q).as_text()
        dims = re.findall(r"tensor<((?:\d+x)+)f32>", text)
        assert dims, "no f32 tensors found in the lowered program"
        return max(int(np.prod([int(d) for d in s.rstrip("x").split("x")])) for s in dims)

    assert biggest(4096) <= 4096 * 64 < 4096 * 16 * 16  # the seed's cumulative tensor: T * F * D
    assert biggest(8192) == 2 * biggest(4096)


@pytest.mark.parametrize("kernel", ["relu", ""])
def test_unknown_kernel_lists_valid_ones(kernel):
    with pytest.raises(ValueError, match="valid choices: elu1, sigmoid, exp, linear, identity"):
        jla.feature_map(jnp.ones(3), kernel)
    with pytest.raises(ValueError, match="valid choices: elu1, sigmoid, exp, linear, identity"):
        tla.feature_map(torch.ones(3), kernel)


def test_bad_shapes_and_chunk_size():
    q = jnp.ones((1, 1, 4, 3))
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive integer"):
        jla.causal_linear_attention(q, q, q, chunk_size=0)
    with pytest.raises(ValueError, match=r"q and k must share \(B, H, T, F\)"):
        jla.causal_linear_attention(q, jnp.ones((1, 1, 5, 3)), q)
    tq = torch.ones(1, 1, 4, 3)
    with pytest.raises(ValueError, match="chunk_size=2.5 must be a positive integer"):
        tla.causal_linear_attention(tq, tq, tq, chunk_size=2.5)
