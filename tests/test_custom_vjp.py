"""Hand-written backward passes (jax.custom_vjp) against jax.grad of the plain formulation, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physnets_jax.ops.attention import causal_attention, causal_self_attention


@pytest.mark.parametrize("with_decay", [False, True])
def test_self_attention_gradients_match_autodiff(with_decay, x64):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 3, 7, 4))) for _ in range(3))
    decay = jnp.asarray([-0.8, 0.3, -2.0]) if with_decay else None
    cotangent = jnp.asarray(rng.standard_normal((2, 3, 7, 4)))

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, decay_H=d) * cotangent)

    expected = jax.grad(loss(causal_attention), argnums=(0, 1, 2, 3))(q, k, v, decay)
    got = jax.jit(jax.grad(loss(causal_self_attention), argnums=(0, 1, 2, 3)))(q, k, v, decay)
    np.testing.assert_allclose(causal_self_attention(q, k, v, decay_H=decay), causal_attention(q, k, v, decay_H=decay), atol=1e-13)
    for name, e, g in zip(("q", "k", "v", "decay"), expected, got, strict=True):
        if e is None:
            assert g is None
            continue
        assert np.abs(np.asarray(e)).max() > 1e-3, name  # a real gradient, not an all-zero one
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-12, err_msg=name)


def test_self_attention_rejects_mismatched_lengths():
    q = jnp.zeros((1, 1, 4, 2))
    with pytest.raises(ValueError, match="one sequence length"):
        causal_self_attention(q, jnp.zeros((1, 1, 5, 2)), jnp.zeros((1, 1, 5, 2)))


def _plain_mlp(act, x, w1, b1, w2, b2):
    """The MLP written with jax.nn's activations, differentiated by jax.grad."""
    u = x @ w1 + (0.0 if b1 is None else b1)
    if act == "gelu":
        h = jax.nn.gelu(u, approximate=False)
    elif act == "relu":
        h = jax.nn.relu(u)
    else:
        value, gate = u[:, : u.shape[1] // 2], u[:, u.shape[1] // 2 :]
        h = value * jax.nn.silu(gate)
    return h @ w2 + (0.0 if b2 is None else b2)


@pytest.mark.parametrize("act,bias", [("gelu", True), ("relu", True), ("gated", True), ("gated", False)])
def test_mlp_core_gradients_match_autodiff(act, bias, x64):
    from physnets_jax.layers.mlp import mlp_core

    rng = np.random.default_rng(1)
    hidden = 6
    x = jnp.asarray(rng.standard_normal((5, 4)))
    w1 = jnp.asarray(rng.standard_normal((4, 2 * hidden if act == "gated" else hidden)))
    w2 = jnp.asarray(rng.standard_normal((hidden, 4)))
    b1 = jnp.asarray(rng.standard_normal(w1.shape[1])) if bias else None
    b2 = jnp.asarray(rng.standard_normal(4)) if bias else None
    cotangent = jnp.asarray(rng.standard_normal((5, 4)))
    args = (x, w1, b1, w2, b2)

    def loss(fn):
        return lambda *a: jnp.sum(fn(act, *a) * cotangent)

    np.testing.assert_allclose(mlp_core(act, *args), _plain_mlp(act, *args), atol=1e-12)
    expected = jax.grad(loss(_plain_mlp), argnums=tuple(range(5)))(*args)
    got = jax.jit(jax.grad(loss(mlp_core), argnums=tuple(range(5))), static_argnums=())(*args)
    for name, e, g in zip(("x", "w1", "b1", "w2", "b2"), expected, got, strict=True):
        if e is None:
            assert g is None, name
            continue
        assert np.abs(np.asarray(e)).max() > 1e-3, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-12, err_msg=name)
