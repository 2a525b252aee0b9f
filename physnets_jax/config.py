"""Framework-free model configuration shared by physnets_jax and physnets_torch.

A decoder-only LM is ``embedding -> n_layer x Block(mixer, mlp, residual) -> final norm -> head``;
every slot is chosen by a string. Presets are named configurations of those slots.
This module imports neither JAX nor torch, so both backends (and tools) can use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

# Valid choices per slot. A new component adds its name here and its builder in both backends'
# layers/__init__.py (MIXERS, MLPS, ...).
EMBEDDINGS = ("learned", "token", "wave")
MIXERS = ("attention", "ripple", "wave", "gateloop", "simple_gateloop", "hybrid")
MLPS = ("gelu", "relu", "ripple", "swiglu", "wave")
RESIDUALS = ("add", "orthogonal_parallel")
RESIDUAL_VARIANTS = ("projection", "reference")  # orthogonal_parallel: parallel = proj x | notebook
HEADS = ("linear", "wave_collapse")
NORMS = ("layernorm", "rmsnorm")
# Wave-Native GPT options (mixer="wave", mlp="wave"); "linear" and "identity" name the same kernel.
WAVE_ATTENTIONS = ("interference", "physics", "pure")
WAVE_KERNELS = ("elu1", "sigmoid", "exp", "linear", "identity")
WAVE_MODES = ("quadratic", "linear")
WAVE_ACTIVATIONS = ("sin", "gelu_sin")
# attention / ripple mixers without a cache; "pallas": a flash kernel (JAX Pallas on GPU/TPU,
# torch FlexAttention); "auto": pallas on GPU/TPU (torch: CUDA), dense elsewhere
ATTENTION_IMPLS = ("dense", "blockwise", "pallas", "auto")
PALLAS_MIN_BLOCK = 16  # the pallas tile: a power of two >= this (Triton dots, TPU sublane tiles)
GATELOOP_SCANS = ("auto", "associative", "chunked", "sequential")  # JAX scan used by the GateLoop mixers;
# auto: lax.scan ("sequential") on CPU, where it measured fastest, associative_scan on GPU/TPU


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Every hyper-parameter of the composable decoder; validated on construction."""

    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases of the attention projections (LayerNorms always have a shift)

    embedding: str = "learned"
    mixer: str = "attention"
    mlp: str = "gelu"
    residual: str = "add"
    residual_variant: str = "projection"  # orthogonal_parallel only: "projection" or "reference"
    head: str = "linear"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    prenorm: bool = True  # False: post-norm blocks, x = norm(x + f(x)), no final norm
    tie_embeddings: bool = True

    mlp_hidden: int | None = None  # None: the MLP kind's own default width (4x, or 8/3x for ripple)
    mlp_bias: bool = True
    attn_out_proj: bool = True  # ripple: the reference has none (False in the preset)
    ripple_decay_init: float = -0.8  # lambda_h at init; its absolute value is the slope
    # attention / ripple without a cache: "dense" materialises the (B, H, T, T) scores; "blockwise"
    # runs attention_block queries at a time, recomputed in the backward, so memory grows
    # linearly in T (no attention-weight dropout there: use dropout=0 or eval mode); "pallas" is
    # a flash kernel with tiles of min(attention_block, 128) (a power of two >= 16; no weight
    # dropout either), for GPU/TPU; "auto" picks pallas there and dense on CPU
    attention_impl: str = "dense"
    attention_block: int = 256

    scan_layers: bool = True  # JAX: run identical blocks with lax.scan (faster backward, compile)

    init_std: float = 0.02
    scaled_residual_init: bool = True  # residual projections N(0, std/sqrt(2 n_layer)) (GPT-2)

    # Wave-Native GPT (embedding="wave", mixer="wave", mlp="wave", head="wave_collapse")
    n_waves: int = 16  # wave components per token / per head
    n_harmonics: int = 4  # harmonics 1f..Hf of each wave (embedding)
    wave_attention: str = "interference"  # mixer="wave": interference | physics | pure
    wave_kernel: str = "elu1"  # pure: elu1 | sigmoid | exp | linear (= identity)
    wave_mode: str = "quadratic"  # pure: quadratic (T^2) | linear (chunked, O(T) memory)
    wave_chunk_size: int = 64  # pure linear mode: chunk length
    wave_activation: str = "sin"  # mlp="wave": sin (sin x + 0.1 x) | gelu_sin (gelu x + 0.1 sin x)
    wave_embed_ratio: float = 0.0  # initial share r of the standard embedding: (1-r) wave + r std

    # GateLoop (mixer="gateloop" | "simple_gateloop" | "hybrid"); docs/gateloop.md
    gateloop_heads: int | None = None  # None: max heads (= dim_inner, head dim 1)
    gateloop_dim_inner: int | None = None  # None: n_embd
    gateloop_frac_gradient: float = 0.9  # share of the gradient reaching the state-transition proj
    gateloop_sub_ln: bool = False  # LayerNorm(dim_inner) on the recurrence output
    gateloop_ablate_complex: bool = False  # a = sign(Re z) sigmoid|Re z| (real)
    gateloop_ablate_state_transition: bool = False  # a = 1 (cumulative sum of k v^T)
    gateloop_checkpoint: bool = False  # recompute the recurrence in the backward (memory)
    gateloop_post_ln: bool = False  # simple_gateloop / hybrid: LayerNorm on the layer output
    gateloop_hybrid_layers: int = 2  # hybrid: the first N blocks get a SimpleGateLoopLayer
    gateloop_scan: str = "auto"  # JAX scan: auto | associative | chunked | sequential (torch: own)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _require_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if self.mlp_hidden is not None:
            _require_positive_int("mlp_hidden", self.mlp_hidden)
        _require_positive_int("attention_block", self.attention_block)
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attention_impl={self.attention_impl!r} is not known; valid choices: {', '.join(ATTENTION_IMPLS)}"
            )
        block = self.attention_block
        if self.attention_impl in ("pallas", "auto") and (block < PALLAS_MIN_BLOCK or block & (block - 1)):
            raise ValueError(
                f"attention_block={block} breaks the pallas tile rule (attention_impl={self.attention_impl!r}): "
                f"the query/key tile must be a power of two >= {PALLAS_MIN_BLOCK}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps} must be > 0")
        if not self.init_std > 0:
            raise ValueError(f"init_std={self.init_std} must be > 0")
        for field, choices in (
            ("embedding", EMBEDDINGS),
            ("mixer", MIXERS),
            ("mlp", MLPS),
            ("residual", RESIDUALS),
            ("head", HEADS),
            ("norm", NORMS),
        ):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(
                    f"{field}={value!r} is not a known {field}; valid choices: {', '.join(choices)}"
                )
        if self.residual_variant not in RESIDUAL_VARIANTS:
            raise ValueError(
                f"residual_variant={self.residual_variant!r} is not a known variant; "
                f"valid choices: {', '.join(RESIDUAL_VARIANTS)}"
            )
        for name in ("n_waves", "n_harmonics", "wave_chunk_size"):
            _require_positive_int(name, getattr(self, name))
        for field, choices in (
            ("wave_attention", WAVE_ATTENTIONS),
            ("wave_kernel", WAVE_KERNELS),
            ("wave_mode", WAVE_MODES),
            ("wave_activation", WAVE_ACTIVATIONS),
        ):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(f"{field}={value!r} is not known; valid choices: {', '.join(choices)}")
        if not 0.0 <= self.wave_embed_ratio <= 1.0:
            raise ValueError(f"wave_embed_ratio={self.wave_embed_ratio} must be in [0, 1]")
        if self.tie_embeddings and self.embedding == "wave":
            raise ValueError("tie_embeddings=True needs a token table; embedding='wave' has none to tie "
                             "(set tie_embeddings=False)")
        if self.tie_embeddings and self.head != "linear":
            raise ValueError(f"tie_embeddings=True needs head='linear', got head={self.head!r}")
        self._check_gateloop()

    def _check_gateloop(self) -> None:
        for name in ("gateloop_heads", "gateloop_dim_inner"):
            if getattr(self, name) is not None:
                _require_positive_int(name, getattr(self, name))
        dim_inner = self.gateloop_dim_inner or self.n_embd
        heads = self.gateloop_heads or dim_inner
        if dim_inner % heads:
            raise ValueError(
                f"gateloop_heads={heads} must divide the GateLoop inner dimension "
                f"gateloop_dim_inner={dim_inner} (None means n_embd={self.n_embd})"
            )
        if not 0.0 < self.gateloop_frac_gradient <= 1.0:
            raise ValueError(f"gateloop_frac_gradient={self.gateloop_frac_gradient} must be in (0, 1]")
        hybrid = self.gateloop_hybrid_layers
        if isinstance(hybrid, bool) or not isinstance(hybrid, int) or hybrid < 0:
            raise ValueError(f"gateloop_hybrid_layers={hybrid!r} must be a non-negative integer")
        if self.gateloop_scan not in GATELOOP_SCANS:
            raise ValueError(
                f"gateloop_scan={self.gateloop_scan!r} is not known; valid choices: {', '.join(GATELOOP_SCANS)}"
            )

    @property
    def head_size(self) -> int:
        """Width of one attention head, n_embd // n_head."""
        return self.n_embd // self.n_head

    @property
    def residual_init_std(self) -> float:
        """Init std of projections writing into the residual stream (GPT-2: std/sqrt(2 n_layer))."""
        if self.scaled_residual_init:
            return self.init_std / (2 * self.n_layer) ** 0.5
        return self.init_std

    @property
    def mlp_width(self) -> int:
        """Hidden width of the MLP: 4 n_embd for plain MLPs; the gated product's width for
        'ripple' (RippleGPT: int(8 n_embd / 3) rounded up to even, halved; 384 -> 512) and
        'swiglu' (int(8 n_embd / 3)). mlp_hidden overrides."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "ripple":
            width = int(self.n_embd * 8 / 3)
            return (width + width % 2) // 2
        if self.mlp == "swiglu":
            return int(8 * self.n_embd / 3)
        return 4 * self.n_embd

    @property
    def extrapolates(self) -> bool:
        """Whether the model accepts sequences longer than block_size (no learned positions)."""
        return self.embedding != "learned"

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of all fields, sorted."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a dict; unknown keys raise a ValueError that lists them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def diff(self, other: ModelConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as {field: (self_value, other_value)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


# --------------------------------------------------------------------------------------------
# Presets. Names are API. Each preset has sizes; "small" is the seed's own size.

_SIZES: dict[str, dict[str, dict[str, Any]]] = {}
_PRESETS: dict[str, dict[str, Any]] = {}
_DEFAULT_SIZE: dict[str, str] = {}


def register_preset(
    name: str, base: dict[str, Any], sizes: dict[str, dict[str, Any]], default_size: str = "small"
) -> None:
    """Register a preset: base fields plus named sizes ("nano" for tests, "small" = seed)."""
    _PRESETS[name] = dict(base)
    _SIZES[name] = {k: dict(v) for k, v in sizes.items()}
    _DEFAULT_SIZE[name] = default_size


def preset_names() -> tuple[str, ...]:
    """All registered preset names."""
    return tuple(sorted(_PRESETS))


def preset_sizes(name: str) -> tuple[str, ...]:
    """Size names registered for a preset."""
    _check_preset(name)
    return tuple(_SIZES[name])


def _check_preset(name: str) -> None:
    if name not in _PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(preset_names())}")


def preset(name: str, size: str | None = None, **overrides: Any) -> ModelConfig:
    """The ModelConfig of a named preset, e.g. preset("ripplegpt", "nano", vocab_size=80).

    The name may carry a size suffix, e.g. "ripplegpt-nano".
    """
    if name not in _PRESETS and "-" in name:
        base_name, _, suffix = name.rpartition("-")
        if base_name in _PRESETS and suffix in _SIZES[base_name] and size is None:
            name, size = base_name, suffix
    _check_preset(name)
    size = size or _DEFAULT_SIZE[name]
    if size not in _SIZES[name]:
        raise ValueError(
            f"unknown size {size!r} for preset {name!r}; valid sizes: {', '.join(_SIZES[name])}"
        )
    fields = {**_PRESETS[name], **_SIZES[name][size], **overrides}
    return ModelConfig.from_dict(fields)


_CHAR_SIZES = {
    "nano": dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32),
    "micro": dict(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128),
    "small": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),
}

# nanoGPT-style baseline: learned absolute positions, fused-qkv softmax attention with output
# projection, 4x GELU MLP, tied head. Cannot run beyond block_size.
register_preset(
    "gpt",
    dict(
        embedding="learned", mixer="attention", mlp="gelu", residual="add", head="linear",
        norm="layernorm", bias=True, tie_embeddings=True, dropout=0.2,
    ),
    _CHAR_SIZES,
)

# RippleGPT (Tavernari/RippleGPT src/model.py): token embedding only, decay-biased attention
# with no output projection, gated RippleMLP, untied bias-free head.
register_preset(
    "ripplegpt",
    dict(
        embedding="token", mixer="ripple", mlp="ripple", residual="add", head="linear",
        norm="layernorm", bias=False, tie_embeddings=False, attn_out_proj=False,
        dropout=0.2, scaled_residual_init=False,
    ),
    _CHAR_SIZES,
)

# Wave-Native GPT (juan-garassino/spectral_cnn, spectral_gpt/wave_gpt.py): wave-packet embedding,
# wave attention (interference by default; physics / pure via wave_attention), sin(x) + 0.1 x MLP,
# wave-collapse head (LayerNorm + biased projection), untied. "small" is the seed size (BPE
# vocab 1024, context 256); medium/large follow the seed's wave_experiments.py model sizes.
_WAVE_SIZES = {
    "nano": dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, n_waves=8, n_harmonics=4),
    "small": dict(vocab_size=1024, block_size=256, n_layer=8, n_head=8, n_embd=384, n_waves=48, n_harmonics=4),
    "medium": dict(vocab_size=1024, block_size=384, n_layer=10, n_head=8, n_embd=512, n_waves=64, n_harmonics=4),
    "large": dict(vocab_size=1024, block_size=512, n_layer=12, n_head=12, n_embd=768, n_waves=96, n_harmonics=4),
}
register_preset(
    "wave_gpt",
    dict(
        embedding="wave", mixer="wave", mlp="wave", residual="add", head="wave_collapse",
        norm="layernorm", bias=True, tie_embeddings=False, dropout=0.1, scaled_residual_init=False,
        wave_attention="interference", wave_kernel="elu1", wave_mode="quadratic", wave_activation="sin",
    ),
    _WAVE_SIZES,
)

# The seed's own control ("classic", WaveGPT model_type="standard"): token + learned position
# embedding, softmax attention with biases, 4x GELU MLP, final LayerNorm, untied bias-free head,
# every linear N(0, 0.02). Same sizes as wave_gpt (n_waves/n_harmonics unused).
register_preset(
    "classic",
    dict(
        embedding="learned", mixer="attention", mlp="gelu", residual="add", head="linear",
        norm="layernorm", bias=True, tie_embeddings=False, dropout=0.1, scaled_residual_init=False,
    ),
    _WAVE_SIZES,
)

# GateLoop transformer (lucidrains/gateloop-transformer 0.2.5 `Transformer`, Katsch 2023): token
# embedding, GateLoopedAttention with max heads (gateloop_heads=None), 4x exact-GELU feed-forward
# with biases, RMSNorm prenorm and final RMSNorm, untied bias-free head. "small" trains on a CPU
# in minutes; "nano" is for tests. docs/gateloop.md.
_GATELOOP_SIZES = {
    "nano": dict(vocab_size=65, block_size=32, n_layer=2, n_head=2, n_embd=32),
    "small": dict(vocab_size=65, block_size=128, n_layer=4, n_head=4, n_embd=128),
}
register_preset(
    "gateloop",
    dict(
        embedding="token", mixer="gateloop", mlp="gelu", residual="add", head="linear",
        norm="rmsnorm", prenorm=True, tie_embeddings=False, mlp_bias=True, dropout=0.0,
    ),
    _GATELOOP_SIZES,
)

# The reference's enwik8 run: dim 512, depth 6, 512 gate-loop heads (max heads), post-LayerNorm
# blocks x = LN(f(x) + x) with no final norm, byte vocabulary: 23,888,896 parameters ("small").
register_preset(
    "gateloop-enwik8",
    dict(
        embedding="token", mixer="gateloop", mlp="gelu", residual="add", head="linear",
        norm="layernorm", prenorm=False, tie_embeddings=False, mlp_bias=True, dropout=0.0,
    ),
    {
        "nano": dict(vocab_size=256, block_size=32, n_layer=2, n_head=2, n_embd=32),
        "small": dict(vocab_size=256, block_size=256, n_layer=6, n_head=8, n_embd=512),
    },
)
