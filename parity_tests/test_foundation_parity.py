"""JAX vs torch: MLPs, norms and the gpt/ripplegpt presets, forward and gradients, float64 and
float32. The attention and ripple mixers (layer level, caches included) are covered by
tests/test_mixer_contract.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import physnets_jax.layers as jl
import physnets_jax.layers.norm as jnorm
import physnets_torch.layers as tl
import physnets_torch.layers.norm as tnorm
from parity_tests.harness import compare, twin
from physnets_core.config import preset
from physnets_jax import losses as jlosses
from physnets_jax.generate import generate as jgenerate
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.state import flat_params
from physnets_torch import losses as tlosses
from physnets_torch.convert import jax_to_torch, load_jax_into_torch, torch_to_jax
from physnets_torch.generate import generate as tgenerate
from physnets_torch.model import Decoder as TDecoder


def _sum_sq(m, x):
    y = m(x)
    return (y**2).sum() if isinstance(y, torch.Tensor) else jnp.sum(y**2), y


LAYER_CASES = {
    "mlp-gelu": lambda cfg: (
        jl.MLPS["gelu"](cfg.replace(mlp="gelu"), 0, rngs=nnx.Rngs(0)),
        tl.MLPS["gelu"](cfg.replace(mlp="gelu"), 0),
    ),
    "mlp-relu": lambda cfg: (
        jl.MLPS["relu"](cfg.replace(mlp="relu"), 0, rngs=nnx.Rngs(0)),
        tl.MLPS["relu"](cfg.replace(mlp="relu"), 0),
    ),
    "mlp-ripple": lambda cfg: (
        jl.MLPS["ripple"](cfg.replace(mlp="ripple"), 0, rngs=nnx.Rngs(0)),
        tl.MLPS["ripple"](cfg.replace(mlp="ripple"), 0),
    ),
    "mlp-swiglu": lambda cfg: (
        jl.MLPS["swiglu"](cfg.replace(mlp="swiglu"), 0, rngs=nnx.Rngs(0)),
        tl.MLPS["swiglu"](cfg.replace(mlp="swiglu"), 0),
    ),
    "layernorm": lambda cfg: (jnorm.make_norm(cfg, rngs=nnx.Rngs(0)), tnorm.make_norm(cfg)),
    "rmsnorm": lambda cfg: (
        jnorm.make_norm(cfg.replace(norm="rmsnorm"), rngs=nnx.Rngs(0)),
        tnorm.make_norm(cfg.replace(norm="rmsnorm")),
    ),
}


def _randomise(jax_module, seed=1):
    """Give every parameter (biases, norm gains, decays too) random values so gradients are generic."""
    rng = np.random.default_rng(seed)
    state = nnx.state(jax_module, nnx.Param)
    nnx.update(jax_module, jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape).astype(x.dtype), state))


@pytest.mark.parametrize("case", list(LAYER_CASES))
@pytest.mark.parametrize("shape", [(1, 1), (2, 7)])
def test_layer_parity(case, shape, dtype):
    cfg = preset("ripplegpt", "nano", dropout=0.0, bias=True)
    jax_layer, torch_layer = LAYER_CASES[case](cfg)
    _randomise(jax_layer)
    twin(jax_layer, torch_layer, dtype)
    x = np.random.default_rng(0).standard_normal((*shape, cfg.n_embd)).astype(dtype)
    compare(jax_layer, torch_layer, _sum_sq, _sum_sq, [x], dtype)


def _lm_loss_jax(m, tokens, targets):
    logits = m(tokens)
    return jlosses.cross_entropy(logits, targets), logits


def _lm_loss_torch(m, tokens, targets):
    logits = m(tokens)
    return tlosses.cross_entropy(logits, targets), logits


MODEL_CASES = {
    "gpt": preset("gpt", "nano", dropout=0.0),
    "ripplegpt": preset("ripplegpt", "nano", dropout=0.0),
    # parts mixed: ripple mixer + learned positions + swiglu, post-norm RMSNorm, untied head
    "mixed-postnorm": preset(
        "ripplegpt", "nano", dropout=0.0, embedding="learned", mlp="swiglu", norm="rmsnorm",
        prenorm=False, attn_out_proj=True, bias=True,
    ),
}


# Every model in float64; sequence 1, an odd length and the full block among them. float32 runs the
# same code with another dtype: two runs of it (each whole-model compile costs seconds on CPU).
# ripplegpt in float64: the run past block_size below.
MODEL_RUNS = [
    ("gpt", (1, 1), "float64"), ("gpt", (2, 32), "float64"), ("mixed-postnorm", (2, 13), "float64"),
    ("ripplegpt", (2, 13), "float32"),
]


@pytest.mark.parametrize("name, shape, dtype", MODEL_RUNS, indirect=["dtype"],
                         ids=[f"{n}-b{s[0]}t{s[1]}-{d}" for n, s, d in MODEL_RUNS])
def test_model_parity(name, shape, dtype):
    cfg = MODEL_CASES[name]
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dtype)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, cfg.vocab_size, shape)
    targets = rng.integers(0, cfg.vocab_size, shape)
    compare(jm, tm, _lm_loss_jax, _lm_loss_torch, [tokens, targets], dtype)


@pytest.mark.parametrize("dtype", ["float64"], indirect=True)
def test_ripplegpt_parity_beyond_block_size(dtype):
    """ripplegpt runs at ~4x its training block (no positions; batch 2, an odd length); both
    backends agree there."""
    cfg = MODEL_CASES["ripplegpt"]
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dtype)
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, cfg.vocab_size, (2, 4 * cfg.block_size - 1))
    targets = rng.integers(0, cfg.vocab_size, tokens.shape)
    compare(jm, tm, _lm_loss_jax, _lm_loss_torch, [tokens, targets], dtype)


@pytest.mark.parametrize("name", ["gpt", "ripplegpt"])
def test_round_trip_is_bitwise(name):
    """JAX -> torch -> JAX reproduces every parameter bit for bit."""
    cfg = preset(name, "nano")
    jm = JDecoder(cfg, rngs=nnx.Rngs(3))
    tm = TDecoder(cfg)
    load_jax_into_torch(jm, tm)
    back = torch_to_jax(tm.state_dict(), jm)
    original = flat_params(jm)
    assert set(back) == set(original)
    for k, v in original.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k].view(np.uint32), v.view(np.uint32)), k
    # torch -> JAX -> torch as well, starting from torch's own initialisation
    tm2 = TDecoder(cfg)
    jm2 = JDecoder(cfg, rngs=nnx.Rngs(4))
    from physnets_torch.convert import load_torch_into_jax

    load_torch_into_jax(tm2, jm2)
    again = jax_to_torch(jm2)
    for k, v in tm2.state_dict().items():
        assert torch.equal(again[k], v), k


@pytest.mark.parametrize("name", ["gpt", "ripplegpt"])
def test_greedy_generation_identical_across_backends(name, x64):
    cfg = MODEL_CASES[name]
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), "float64")
    prompt = np.random.default_rng(6).integers(0, cfg.vocab_size, (2, 4))
    n = cfg.block_size - 4 if name == "gpt" else 2 * cfg.block_size  # ripplegpt goes past block_size
    a = np.asarray(jgenerate(jm, prompt, n, greedy=True))
    b = tgenerate(tm, torch.from_numpy(prompt), n, greedy=True).numpy()
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, dtype", [("gpt", "float32"), ("ripplegpt", "float64")], indirect=["dtype"])
def test_blockwise_attention_parity(name, dtype):
    """attention_impl='blockwise' (blocks of 8 queries, ragged last block, 2.5x the training block
    for ripplegpt): loss, logits and every gradient agree across backends at the harness tolerances."""
    cfg = MODEL_CASES[name].replace(attention_impl="blockwise", attention_block=8)
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), dtype)
    rng = np.random.default_rng(3)
    T = cfg.block_size if name == "gpt" else int(2.5 * cfg.block_size)
    tokens = rng.integers(0, cfg.vocab_size, (2, T - 3))
    targets = rng.integers(0, cfg.vocab_size, tokens.shape)
    compare(jm, tm, _lm_loss_jax, _lm_loss_torch, [tokens, targets], dtype)
