"""JAX vs torch for preset wave_gpt-headline (the c04e261 version of Wave-Native GPT): the blend
embedding alone and the whole model under the unprojected QFE loss it was trained with, forward
values and gradients of every parameter, in float64 and float32 (the harness's 1e-10 and 1e-5,
relative to max(1, scale))."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import physnets_jax.layers as jl
import physnets_torch.layers as tl
from parity_tests.harness import compare, twin
from physnets_core.config import preset
from physnets_jax import losses as jlosses
from physnets_jax.model import Decoder as JDecoder
from physnets_torch import losses as tlosses
from physnets_torch.model import Decoder as TDecoder

# vocab 300 > 256: the unprojected QFE is the headline run's (the default would project)
CFG = preset("wave_gpt-headline", "nano", vocab_size=300, dropout=0.0)


def _perturb(model):
    """Move the parameters that start at constants (LayerNorms, wave_ratio, phases, temperature)
    so that their gradients are compared away from the init point."""
    rng = np.random.default_rng(7)
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            value = var[...]
            var[...] = value + 0.1 * jnp.asarray(rng.standard_normal(value.shape), value.dtype)


def test_blend_embedding_parity(dtype):
    j = jl.EMBEDDINGS["wave"](CFG, rngs=nnx.Rngs(0))
    _perturb(j)
    j, t = twin(j, tl.EMBEDDINGS["wave"](CFG), dtype)
    tokens = np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 9))

    def jloss(m, tok):
        y = m(tok)
        return jnp.sum(y**2 * jnp.arange(CFG.n_embd)), y

    def tloss(m, tok):
        y = m(tok)
        return (y**2 * torch.arange(CFG.n_embd, dtype=y.dtype)).sum(), y

    compare(j, t, jloss, tloss, [tokens], dtype)


def _qfe(m, tok, tgt):
    logits = m(tok)
    if isinstance(logits, torch.Tensor):
        return tlosses.qfe_loss(logits, tgt, projection_dim=None), logits
    return jlosses.qfe_loss(logits, tgt, projection_dim=None), logits


# sequence length 1 in float64 only: float32 checks the tolerance at T=9
@pytest.mark.parametrize("T, dtype", [(1, "float64"), (9, "float64"), (9, "float32")], indirect=["dtype"])
def test_whole_headline_model_parity(T, dtype):
    j = JDecoder(CFG, rngs=nnx.Rngs(0))
    _perturb(j)
    j, t = twin(j, TDecoder(CFG), dtype)
    assert j.norm_f is None and t.norm_f is None
    rng = np.random.default_rng(2)
    tokens, targets = rng.integers(0, CFG.vocab_size, (2, T)), rng.integers(0, CFG.vocab_size, (2, T))
    compare(j, t, _qfe, _qfe, [tokens, targets], dtype)
