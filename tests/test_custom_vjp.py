"""Hand-written backward passes (jax.custom_vjp) against jax.grad of the plain formulation, float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from physnets_jax.ops.attention import causal_attention, causal_self_attention, query_tiles


@pytest.mark.parametrize("with_decay", [False, True])
@pytest.mark.parametrize("keep_prob", [1.0, 0.7])
@pytest.mark.parametrize("T", [7, 150])  # one query tile; three (64, 64, 22 rows)
def test_self_attention_gradients_match_autodiff(with_decay, keep_prob, T, x64):
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 3, T, 4))) for _ in range(3))
    decay = jnp.asarray([-0.08, 0.03, -0.2]) if with_decay else None
    cotangent = jnp.asarray(rng.standard_normal((2, 3, T, 4)))
    keep = jnp.asarray(rng.random((2, 3, T, T)) < keep_prob) if keep_prob < 1 else None

    def dropout(w):  # what nnx.Dropout does with this mask
        return w if keep is None else jnp.where(keep, w / keep_prob, 0.0)

    def plain(q, k, v, d):
        return causal_attention(q, k, v, decay_H=d, weights_dropout=dropout)

    def custom(q, k, v, d):
        return causal_self_attention(q, k, v, decay_H=d, keep_BxHxTxT=keep, keep_prob=keep_prob)

    def loss(fn):
        return lambda q, k, v, d: jnp.sum(fn(q, k, v, d) * cotangent)

    expected = jax.grad(loss(plain), argnums=(0, 1, 2, 3))(q, k, v, decay)
    got = jax.jit(jax.grad(loss(custom), argnums=(0, 1, 2, 3)))(q, k, v, decay)
    np.testing.assert_allclose(custom(q, k, v, decay), plain(q, k, v, decay), atol=1e-13)
    for name, e, g in zip(("q", "k", "v", "decay"), expected, got, strict=True):
        if e is None:
            assert g is None
            continue
        assert np.abs(np.asarray(e)).max() > 1e-3, name  # a real gradient, not an all-zero one
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-12, err_msg=name)


def test_query_tiles_cover_the_sequence_once():
    assert query_tiles(7) == [(0, 7)]
    assert query_tiles(150) == [(0, 64), (64, 128), (128, 150)]
    tiles = query_tiles(4096)
    assert len(tiles) == 16 and tiles[0] == (0, 256) and tiles[-1] == (3840, 4096)
    assert all(a[1] == b[0] for a, b in zip(tiles[:-1], tiles[1:], strict=True))


def test_layer_dropout_path_draws_the_dropout_layers_mask(x64):
    # The dense path with active attention-weight dropout draws the mask from the Dropout layer's
    # stream as the layer itself would: same output as the autodiff path with a clone of it.
    from flax import nnx

    from physnets_jax.layers.attention import _attention_without_cache
    from physnets_jax.layers.dropout import Dropout

    rng = np.random.default_rng(1)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 3, 6, 4))) for _ in range(3))
    decay = jnp.asarray([0.5, -1.0, 2.0])
    drop = Dropout(0.3, rngs=nnx.Rngs(dropout=5))
    twin = nnx.clone(drop)
    got = _attention_without_cache(q, k, v, decay, drop, None)
    np.testing.assert_allclose(got, causal_attention(q, k, v, decay_H=decay, weights_dropout=twin), atol=1e-13)
    assert not np.allclose(got, causal_attention(q, k, v, decay_H=decay))  # something was dropped
    again = _attention_without_cache(q, k, v, decay, drop, None)
    assert not np.allclose(again, got)  # the stream advanced: a new mask per call


def test_self_attention_rejects_bad_keep_mask():
    q = jnp.zeros((1, 2, 4, 2))
    with pytest.raises(ValueError, match=r"keep mask float32\[1, 2, 4, 4\]: must be bool of shape"):
        causal_self_attention(q, q, q, keep_BxHxTxT=jnp.ones((1, 2, 4, 4)), keep_prob=0.5)
    with pytest.raises(ValueError, match="keep_prob=0.0 must be in"):
        causal_self_attention(q, q, q, keep_BxHxTxT=jnp.ones((1, 2, 4, 4), bool), keep_prob=0.0)


def test_self_attention_rejects_mismatched_lengths():
    q = jnp.zeros((1, 1, 4, 2))
    with pytest.raises(ValueError, match="one sequence length"):
        causal_self_attention(q, jnp.zeros((1, 1, 5, 2)), jnp.zeros((1, 1, 5, 2)))


def _plain_mlp(act, x, w1, b1, w2, b2, keep=None, keep_prob=1.0):
    """The MLP written with jax.nn's activations (and a dropout mask on the hidden units),
    differentiated by jax.grad."""
    u = x @ w1 + (0.0 if b1 is None else b1)
    if act == "gelu":
        h = jax.nn.gelu(u, approximate=False)
    elif act == "relu":
        h = jax.nn.relu(u)
    elif act == "sin":
        h = jnp.sin(u) + 0.1 * u
    elif act == "gelu_sin":
        h = jax.nn.gelu(u, approximate=False) + 0.1 * jnp.sin(u)
    else:
        value, gate = u[:, : u.shape[1] // 2], u[:, u.shape[1] // 2 :]
        h = value * jax.nn.silu(gate)
    if keep is not None:
        h = jnp.where(keep, h / keep_prob, 0.0)
    return h @ w2 + (0.0 if b2 is None else b2)


@pytest.mark.parametrize("act,bias,keep_prob", [("gelu", True, 1.0), ("relu", True, 1.0), ("gated", True, 1.0),
                                                ("gated", False, 1.0), ("sin", True, 0.6), ("gelu_sin", True, 0.6),
                                                ("gelu", True, 0.6)])
def test_mlp_core_gradients_match_autodiff(act, bias, keep_prob, x64):
    from physnets_jax.layers.mlp import mlp_core

    rng = np.random.default_rng(1)
    hidden = 6
    x = jnp.asarray(rng.standard_normal((5, 4)))
    w1 = jnp.asarray(rng.standard_normal((4, 2 * hidden if act == "gated" else hidden)))
    w2 = jnp.asarray(rng.standard_normal((hidden, 4)))
    b1 = jnp.asarray(rng.standard_normal(w1.shape[1])) if bias else None
    b2 = jnp.asarray(rng.standard_normal(4)) if bias else None
    cotangent = jnp.asarray(rng.standard_normal((5, 4)))
    keep = jnp.asarray(rng.random((5, hidden)) < keep_prob) if keep_prob < 1 else None
    args = (x, w1, b1, w2, b2)

    def loss(fn):
        return lambda *a: jnp.sum(fn(act, *a, keep, keep_prob) * cotangent)

    np.testing.assert_allclose(mlp_core(act, *args, keep, keep_prob), _plain_mlp(act, *args, keep, keep_prob), atol=1e-12)
    expected = jax.grad(loss(_plain_mlp), argnums=tuple(range(5)))(*args)
    got = jax.jit(jax.grad(loss(mlp_core), argnums=tuple(range(5))), static_argnums=())(*args)
    for name, e, g in zip(("x", "w1", "b1", "w2", "b2"), expected, got, strict=True):
        if e is None:
            assert g is None, name
            continue
        assert np.abs(np.asarray(e)).max() > 1e-3, name
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-12, err_msg=name)


def test_wave_mlp_dropout_path_equals_the_seeds_form(x64):
    # WaveMLP in training mode: the custom-gradient path draws the inner mask as the next draw of
    # its Dropout's stream, so it equals dropout(fc2(dropout(act(fc1 x)))) with a clone of the layer.
    from flax import nnx

    from physnets_core.config import preset
    from physnets_jax.layers.wave import WaveMLP, wave_activation

    cfg = preset("wave_gpt", "nano", dropout=0.25)
    mlp = WaveMLP(cfg, 0, rngs=nnx.Rngs(3))
    twin = nnx.clone(mlp)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, cfg.n_embd)))
    expected = twin.drop(twin.fc2(twin.drop(wave_activation(twin.fc1(x), twin.kind))))
    np.testing.assert_allclose(mlp(x), expected, atol=1e-12)
    assert float(jnp.mean(expected == 0)) > 0.1  # the outer dropout was active
