"""Feed-forward layers: MLP (gelu/relu, 4x) and GatedMLP (RippleMLP and SwiGLU)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.dense import dense
from physnets_jax.layers.dropout import Dropout
from physnets_jax.ops import trig
from physnets_jax.ops.dropout import apply_keep_mask


def _normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, elementwise."""
    return 0.5 * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def gelu(x):
    """Exact GELU x Phi(x), in torch's erf form. jax.nn.gelu(approximate=False) computes the same
    function through erfc, whose two-branch XLA:CPU expansion made the MLP's backward recompute
    cost 2.8 ms per layer at gpt-small (1.1 ms with erf)."""
    return x * _normal_cdf(x)


ACTIVATIONS = {
    "gelu": gelu,
    "relu": jax.nn.relu,
    "gated": lambda u: _gated(u)[0],
    "sin": lambda x: trig.sin(x) + 0.1 * x,  # Wave-Native GPT's activations (layers/wave.py)
    "gelu_sin": lambda x: gelu(x) + 0.1 * trig.sin(x),
}


def _gelu_derivative(u):
    pdf = jnp.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi))
    return _normal_cdf(u) + u * pdf


def _gated(u):
    """value * silu(gate) for (value, gate) = halves of u's last axis, and sigmoid(gate)."""
    value, gate = jnp.split(u, 2, axis=-1)
    sig = jax.nn.sigmoid(gate)
    return value * (gate * sig), (value, gate, sig)


def _activation_vjp(name: str, u, dh):
    """d act(u) / du applied to the cotangent dh (same shape as act(u))."""
    if name == "relu":
        return jnp.where(u > 0, dh, jnp.zeros_like(dh))
    if name == "gelu":
        return dh * _gelu_derivative(u)
    if name == "sin":
        return dh * (trig.cos(u) + 0.1)
    if name == "gelu_sin":
        return dh * (_gelu_derivative(u) + 0.1 * trig.cos(u))
    _, (value, gate, sig) = _gated(u)
    dvalue = dh * (gate * sig)
    dgate = dh * value * sig * (1.0 + gate * (1.0 - sig))
    return jnp.concatenate([dvalue, dgate], axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 7))
def mlp_core(act: str, x_NxD, w1_DxU, b1_U, w2_HxD, b2_D, keep_NxH=None, keep_prob: float = 1.0):
    """fc2(dropout(act(fc1(x)))) on rows x (N, D): drop(act(x w1 + b1)) w2 + b2 -> (N, D), with a
    hand-written backward pass that keeps only x, fc1's output u and the bool keep mask, and
    recomputes act(u).

    act: "gelu" (exact), "relu", "gated" (value * silu(gate), halves of u), "sin" or "gelu_sin"
    (Wave-Native GPT). b1/b2 may be None. keep_NxH: dropout on the hidden activations (kept entries
    divided by keep_prob; Dropout.draw_keep_mask), None for none. Under jax.grad of the layer scan,
    XLA's own backward stacked act(u), the dropped activations and the activation's intermediates
    for every layer (two to four (N, U) buffers per layer, zero-filled first).
    """
    return _mlp_fwd(act, x_NxD, w1_DxU, b1_U, w2_HxD, b2_D, keep_NxH, keep_prob)[0]


def _hidden(act, u, keep, keep_prob):
    return apply_keep_mask(ACTIVATIONS[act](u), keep, keep_prob)


def _mlp_fwd(act, x, w1, b1, w2, b2, keep, keep_prob):
    u = x @ w1
    if b1 is not None:
        u = u + b1
    out = _hidden(act, u, keep, keep_prob) @ w2
    if b2 is not None:
        out = out + b2
    return out, (x, w1, b1, w2, b2, keep, u)


def _mlp_bwd(act, keep_prob, residuals, dout):
    x, w1, b1, w2, b2, keep, u = residuals
    u = jax.lax.optimization_barrier(u)  # recompute act(u); do not keep the forward's (see attention)
    dw2 = _hidden(act, u, keep, keep_prob).T @ dout
    db2 = None if b2 is None else jnp.sum(dout, axis=0)
    du = _activation_vjp(act, u, apply_keep_mask(dout @ w2.T, keep, keep_prob))
    dw1 = x.T @ du
    db1 = None if b1 is None else jnp.sum(du, axis=0)
    return du @ w1.T, dw1, db1, dw2, db2, None


mlp_core.defvjp(_mlp_fwd, _mlp_bwd)


def apply_mlp(act: str, fc1: nnx.Linear, fc2: nnx.Linear, x_BxTxD: jax.Array, hidden_dropout: Dropout | None = None) -> jax.Array:
    """mlp_core on x's rows with the layers' parameters (cast to one dtype); hidden_dropout: a
    Dropout applied to the activations inside it (its mask drawn from its stream)."""
    params = [fc1.kernel[...], fc2.kernel[...]]
    params += [layer.bias[...] for layer in (fc1, fc2) if layer.bias is not None]
    dtype = jnp.result_type(x_BxTxD, *params)
    cast = lambda a: None if a is None else a.astype(dtype)  # noqa: E731
    b1 = None if fc1.bias is None else fc1.bias[...]
    b2 = None if fc2.bias is None else fc2.bias[...]
    rows = x_BxTxD.reshape(-1, x_BxTxD.shape[-1]).astype(dtype)
    keep, keep_prob = None, 1.0
    if hidden_dropout is not None:
        hidden = fc2.kernel.shape[0]
        keep, keep_prob = hidden_dropout.draw_keep_mask((rows.shape[0], hidden))
    out = mlp_core(act, rows, cast(fc1.kernel[...]), cast(b1), cast(fc2.kernel[...]), cast(b2), keep, keep_prob)
    return out.reshape(x_BxTxD.shape[:-1] + (out.shape[-1],))


class MLP(nnx.Module):
    """fc2(act(fc1(x))) then dropout; hidden 4 n_embd by default: (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        hidden = cfg.mlp_width
        self.act_name = cfg.mlp
        self.fc1 = dense(cfg.n_embd, hidden, bias=cfg.mlp_bias, std=cfg.init_std, rngs=rngs)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std, rngs=rngs)
        self.drop = Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.drop(apply_mlp(self.act_name, self.fc1, self.fc2, x_BxTxD))


class GatedMLP(nnx.Module):
    """fc2(value * silu(gate)) with (value, gate) = halves of fc1(x), in that order; then dropout.

    mlp='ripple' is RippleGPT's RippleMLP (biases, reference width); mlp='swiglu' the LLaMA form.
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        hidden = cfg.mlp_width
        self.fc1 = dense(cfg.n_embd, 2 * hidden, bias=cfg.mlp_bias, std=cfg.init_std, rngs=rngs)
        self.fc2 = dense(hidden, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std, rngs=rngs)
        self.drop = Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.drop(apply_mlp("gated", self.fc1, self.fc2, x_BxTxD))
