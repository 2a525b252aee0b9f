"""JAX vs torch for Wave-Native GPT: the MLP, head and embedding, whole models, the QFE loss and RGD
over 10 steps, in float64 and float32, forward values and gradients (params and float inputs). The
wave mixer's variants are covered by tests/test_mixer_contract.py.

Tolerances (max |jax - torch| relative to max(1, scale)): the harness's 1e-10 (float64) and 1e-5
(float32) for layers and models; RGD adds FFTs (DESIGN section 3: ~5e-5 absolute in float32) and
compounds 10 Adam steps, so its float32 comparison uses 1e-4 on parameters and moments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import physnets_jax.layers as jl
import physnets_torch.layers as tl
from parity_tests.harness import JNP, TORCH, assert_close, compare, twin
from physnets_core.config import ModelConfig, preset
from physnets_jax import losses as jlosses
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.model import cast_params
from physnets_jax.optim import rgd
from physnets_jax.state import flatten_state
from physnets_torch import losses as tlosses
from physnets_torch.convert import jax_to_torch, load_jax_into_torch
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.optim import RGD

BASE = ModelConfig.from_dict(dict(
    vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16, n_waves=4, n_harmonics=3,
    embedding="wave", mixer="wave", mlp="wave", head="wave_collapse", tie_embeddings=False, wave_chunk_size=3,
))
VARIANTS = {
    "interference": dict(wave_attention="interference"),
    "physics": dict(wave_attention="physics"),
    **{
        f"pure-{k}-{m}": dict(wave_attention="pure", wave_kernel=k, wave_mode=m)
        for m in ("quadratic", "linear")
        for k in ("elu1", "sigmoid", "exp", "linear")
    },
}



def _sum_sq(m, x):
    y = m(x)
    return (y**2).sum() if isinstance(y, torch.Tensor) else jnp.sum(y**2), y


def _x(dtype, shape=(2, 7, 16), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("activation", ["sin", "gelu_sin"])
def test_mlp_and_head_parity(activation, dtype):
    cfg = BASE.replace(wave_activation=activation)
    j, t = twin(jl.MLPS["wave"](cfg, 0, rngs=nnx.Rngs(0)), tl.MLPS["wave"](cfg, 0), dtype)
    compare(j, t, _sum_sq, _sum_sq, [_x(dtype)], dtype)
    j, t = twin(jl.HEADS["wave_collapse"](cfg, rngs=nnx.Rngs(0)), tl.HEADS["wave_collapse"](cfg), dtype)
    compare(j, t, _sum_sq, _sum_sq, [_x(dtype)], dtype)


@pytest.mark.parametrize("ratio", [0.0, 0.25])
def test_embedding_parity(ratio, dtype):
    cfg = BASE.replace(wave_embed_ratio=ratio)
    j, t = twin(jl.EMBEDDINGS["wave"](cfg, rngs=nnx.Rngs(0)), tl.EMBEDDINGS["wave"](cfg), dtype)
    tokens = np.random.default_rng(1).integers(0, 40, (2, 9))

    def jloss(m, tok):
        y = m(tok, 5)
        return jnp.sum(y**2 * jnp.arange(16)), y

    def tloss(m, tok):
        y = m(tok, 5)
        return (y**2 * torch.arange(16, dtype=y.dtype)).sum(), y

    compare(j, t, jloss, tloss, [tokens], dtype)


def _ce(m, tok, tgt):
    logits = m(tok)
    if isinstance(logits, torch.Tensor):
        return tlosses.qfe_loss(logits, tgt), logits
    return jlosses.qfe_loss(logits, tgt), logits


# The preset (interference) in float64, sequence 1 with the pure quadratic mixer, the pure linear
# mode in float32: each whole-model compile costs seconds on CPU; every attention variant is
# compared per layer, float64 and float32, by tests/test_mixer_contract.py.
@pytest.mark.parametrize(
    "name, T, dtype",
    [("interference", 9, "float64"), ("pure-elu1-quadratic", 1, "float64"), ("pure-exp-linear", 9, "float32")],
    indirect=["dtype"],
)
def test_whole_model_parity_through_convert(name, T, dtype):
    cfg = preset("wave_gpt", "nano", dropout=0.0, wave_chunk_size=4, **VARIANTS[name])
    j, t = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dtype)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, cfg.vocab_size, (2, T))
    targets = rng.integers(0, cfg.vocab_size, (2, T))
    compare(j, t, _ce, _ce, [tokens, targets], dtype)


def test_classic_preset_parity(x64):
    dtype = "float64"
    cfg = preset("classic", "nano", dropout=0.0)
    j, t = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dtype)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, (1, 7))
    compare(j, t, _ce, _ce, [tokens, tokens], dtype)


@pytest.mark.parametrize("V", [33, 300])
def test_qfe_parity(V, dtype):
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((2, 10, V)) * 3).astype(dtype)
    targets = rng.integers(0, V, (2, 10))
    jl_, jg = jax.jit(jax.value_and_grad(lambda x: jlosses.qfe_loss(x, jnp.asarray(targets), lambda_coherence=0.5)))(
        jnp.asarray(logits)
    )
    tx = torch.from_numpy(logits).requires_grad_(True)
    tl_ = tlosses.qfe_loss(tx, torch.from_numpy(targets), lambda_coherence=0.5)
    tl_.backward()
    tol = {"float64": 1e-10, "float32": 1e-5}[dtype]
    assert_close(float(jl_), float(tl_.detach()), tol, "qfe loss")
    assert_close(np.asarray(jg), tx.grad.numpy(), tol, "qfe grad", scale=float(tx.grad.abs().max()))


def test_rgd_training_parity_10_steps(dtype, use_qfe=True):
    """10 steps of RGD + QFE (vocab 300 > 256: projected) on a nano wave model: parameters and
    Adam moments agree."""
    cfg = preset("wave_gpt", "nano", dropout=0.0, n_layer=1, vocab_size=300, wave_attention="pure",
                 wave_kernel="elu1", wave_mode="linear", wave_chunk_size=4)
    jm = JDecoder(cfg, rngs=nnx.Rngs(0))
    cast_params(jm, JNP[dtype])
    tm = TDecoder(cfg).to(TORCH[dtype])
    load_jax_into_torch(jm, tm)
    hp = dict(resonance_strength=0.5, warmup_steps=4, weight_decay=0.01)
    tx = rgd(1e-3, **hp)
    graphdef, params, rest = nnx.split(jm, nnx.Param, ...)
    opt_state = tx.init(params)
    topt = RGD(tm.parameters(), lr=1e-3, **hp)
    jloss_fn = jlosses.qfe_loss if use_qfe else jlosses.cross_entropy
    tloss_fn = tlosses.qfe_loss if use_qfe else tlosses.cross_entropy

    @jax.jit
    def step(params, opt_state, tok, tgt):
        grads = jax.grad(lambda p: jloss_fn(nnx.merge(graphdef, p, rest)(tok), tgt))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    rng = np.random.default_rng(5)
    for _ in range(10):
        tok, tgt = rng.integers(0, cfg.vocab_size, (2, 9)), rng.integers(0, cfg.vocab_size, (2, 9))
        params, opt_state = step(params, opt_state, jnp.asarray(tok), jnp.asarray(tgt))
        topt.zero_grad()
        tloss_fn(tm(torch.from_numpy(tok)), torch.from_numpy(tgt)).backward()
        topt.step()
    tol = {"float64": 1e-10, "float32": 1e-4}[dtype]
    jparams = jax_to_torch(flatten_state(params))
    adam = opt_state[0]
    mu, nu = jax_to_torch(flatten_state(adam.mu)), jax_to_torch(flatten_state(adam.nu))
    for name, p in tm.named_parameters():
        assert_close(jparams[name].numpy(), p.detach().numpy(), tol, f"param {name}")
        state = topt.state[p]
        assert_close(mu[name].numpy(), state["exp_avg"].numpy(), tol, f"exp_avg {name}")
        assert_close(nu[name].numpy(), state["exp_avg_sq"].numpy(), tol, f"exp_avg_sq {name}")
