"""Layer registries: each config slot string maps to the module class that implements it.

A new component registers here (and in physnets_torch/layers/__init__.py, same keys) and adds
its name to the matching tuple in physnets_core/config.py.
"""

from physnets_jax.layers.attention import CausalSelfAttention
from physnets_jax.layers.embedding import LearnedEmbedding, TokenEmbedding
from physnets_jax.layers.head import LinearHead
from physnets_jax.layers.mlp import MLP, GatedMLP
from physnets_jax.layers.residual import AddResidual, OrthogonalParallelResidual
from physnets_jax.layers.ripple import RippleAttention

# slot value -> class(cfg, *, rngs)
EMBEDDINGS = {"learned": LearnedEmbedding, "token": TokenEmbedding}
HEADS = {"linear": LinearHead}
# slot value -> class(cfg, layer_idx, *, rngs)
MIXERS = {"attention": CausalSelfAttention, "ripple": RippleAttention}
MLPS = {"gelu": MLP, "relu": MLP, "ripple": GatedMLP, "swiglu": GatedMLP}
RESIDUALS = {"add": AddResidual, "orthogonal_parallel": OrthogonalParallelResidual}

# Wave-Native GPT (registered after the literals so that other slots' edits stay independent)
from physnets_jax.layers.wave import WaveAttention, WaveCollapseHead, WaveMLP, WavePacketEmbedding  # noqa: E402

EMBEDDINGS["wave"] = WavePacketEmbedding
HEADS["wave_collapse"] = WaveCollapseHead
MIXERS["wave"] = WaveAttention
MLPS["wave"] = WaveMLP

# GateLoop (docs/gateloop.md)
from physnets_jax.layers.gateloop import GateLoopedAttention, HybridMixer, SimpleGateLoopLayer  # noqa: E402

MIXERS["gateloop"] = GateLoopedAttention
MIXERS["simple_gateloop"] = SimpleGateLoopLayer
MIXERS["hybrid"] = HybridMixer
