"""attention_impl='pallas' across backends: the JAX Pallas kernel (interpret mode on this CPU) and
the torch FlexAttention twin compute the same attention and the same model logits, in float64.

Forward only: torch 2.13's FlexAttention has no backward on CPU (gradients are checked per backend
against the dense path: tests/test_pallas_attention.py; torch's on CUDA)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from parity_tests.harness import assert_close, twin
from physnets_jax.config import preset
from physnets_jax.model import Decoder as JDecoder
from physnets_jax.ops.pallas_attention import pallas_causal_attention as jax_pallas
from physnets_jax.ops.pallas_attention import pallas_interpret_mode
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.ops.pallas_attention import pallas_causal_attention as torch_pallas


def test_kernels_agree_float64(x64):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 3, 45, 8)) for _ in range(3))
    decay = np.array([-0.8, 0.05, 2.0])
    run = jax.jit(lambda q, k, v, d: jax_pallas(q, k, v, decay_H=d, block=16, interpret=True))
    for d in (decay, None):
        got = run(*(jnp.asarray(a) for a in (q, k, v)), None if d is None else jnp.asarray(d))
        with torch.no_grad():
            want = torch_pallas(*(torch.from_numpy(a) for a in (q, k, v)),
                                decay_H=None if d is None else torch.from_numpy(d), block=16)
        assert_close(got, want.numpy(), 1e-12, f"attention, decay={d is not None}")


@pytest.mark.parametrize("name", ["gpt", "ripplegpt"])
def test_model_logits_agree_float64(name, x64):
    """gpt at its block size (29 tokens, 16-token tiles, ragged), ripplegpt at 2.4x its block."""
    cfg = preset(name, "nano", dropout=0.0, attention_impl="pallas", attention_block=16)
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), "float64")
    T = cfg.block_size - 3 if name == "gpt" else int(2.4 * cfg.block_size)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, T))
    with pallas_interpret_mode():
        jl = nnx.jit(lambda m, t: m(t))(jm, jnp.asarray(tokens))
    with torch.no_grad():
        tl = tm(torch.from_numpy(tokens))
    assert_close(jl, tl.numpy(), 1e-10, f"{name} logits")
