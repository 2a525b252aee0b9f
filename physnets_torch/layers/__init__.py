"""Layer registries: each config slot string maps to the module class that implements it.

Same keys as physnets_jax/layers/__init__.py.
"""

from physnets_torch.layers.attention import CausalSelfAttention
from physnets_torch.layers.embedding import LearnedEmbedding, TokenEmbedding
from physnets_torch.layers.head import LinearHead
from physnets_torch.layers.mlp import MLP, GatedMLP
from physnets_torch.layers.residual import AddResidual, OrthogonalParallelResidual
from physnets_torch.layers.ripple import RippleAttention

# slot value -> class(cfg)
EMBEDDINGS = {"learned": LearnedEmbedding, "token": TokenEmbedding}
HEADS = {"linear": LinearHead}
# slot value -> class(cfg, layer_idx)
MIXERS = {"attention": CausalSelfAttention, "ripple": RippleAttention}
MLPS = {"gelu": MLP, "relu": MLP, "ripple": GatedMLP, "swiglu": GatedMLP}
RESIDUALS = {"add": AddResidual, "orthogonal_parallel": OrthogonalParallelResidual}

# Wave-Native GPT (registered after the literals so that other slots' edits stay independent)
from physnets_torch.layers.wave import WaveAttention, WaveCollapseHead, WaveMLP, WavePacketEmbedding  # noqa: E402

EMBEDDINGS["wave"] = WavePacketEmbedding
HEADS["wave_collapse"] = WaveCollapseHead
MIXERS["wave"] = WaveAttention
MLPS["wave"] = WaveMLP

# GateLoop (docs/gateloop.md)
from physnets_torch.layers.gateloop import GateLoopedAttention, HybridMixer, SimpleGateLoopLayer  # noqa: E402

MIXERS["gateloop"] = GateLoopedAttention
MIXERS["simple_gateloop"] = SimpleGateLoopLayer
MIXERS["hybrid"] = HybridMixer
