"""Framework-free model configuration shared by physnets_jax and physnets_torch.

A decoder-only LM is ``embedding -> n_layer x Block(mixer, mlp, residual) -> final norm -> head``;
every slot is chosen by a string (`SLOTS` is the single list of choices; both backends' layer
registries are tested equal to it). Options that belong to one mixer live in their own small
frozen dataclass held by ModelConfig (`cfg.gateloop.heads`, `cfg.wave.attention`,
`cfg.ripple.decay_init`), so a new mixer never grows everyone's config. Presets are named
configurations. This module imports numpy-free standard library only.

Overrides may name a nested field three ways, all equivalent:
``preset("gateloop", gateloop={"heads": 4})``, ``preset("gateloop", **{"gateloop.heads": 4})``
and the flat name of earlier versions, ``preset("gateloop", gateloop_heads=4)`` (also read from
old config.json files).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from physnets_core.checks import check_pallas_block

# Valid choices per slot. A new component adds its name here and its builder in both backends'
# layers/__init__.py (EMBEDDINGS, MIXERS, ...); tests/test_registry.py checks they agree.
EMBEDDINGS = ("learned", "token", "wave")
MIXERS = ("attention", "ripple", "wave", "gateloop", "simple_gateloop", "hybrid")
MLPS = ("gelu", "relu", "ripple", "swiglu", "wave")
RESIDUALS = ("add", "orthogonal_parallel")
HEADS = ("linear", "wave_collapse")
SLOTS: dict[str, tuple[str, ...]] = {
    "embedding": EMBEDDINGS, "mixer": MIXERS, "mlp": MLPS, "residual": RESIDUALS, "head": HEADS,
}
RESIDUAL_VARIANTS = ("projection", "reference")  # orthogonal_parallel: parallel = proj x | notebook
NORMS = ("layernorm", "rmsnorm")
# Wave-Native GPT options (mixer="wave", mlp="wave"); "linear" and "identity" name the same kernel.
WAVE_ATTENTIONS = ("interference", "physics", "pure")
WAVE_KERNELS = ("elu1", "sigmoid", "exp", "linear", "identity")
WAVE_MODES = ("quadratic", "linear")
WAVE_ACTIVATIONS = ("sin", "gelu_sin")
# embedding="wave": "physics" (physics init, [A sin, A cos, phase, log1p f] -> RMS norm; preset wave_gpt) |
# "blend" (the headline run's c04e261 version: random init, LayerNorm(s wave + (1 - s) embed), s learned)
WAVE_EMBEDDINGS = ("physics", "blend")
# attention / ripple mixers without a cache; "pallas": a flash kernel (JAX Pallas on GPU/TPU,
# torch FlexAttention); "auto": pallas on GPU/TPU (torch: CUDA), dense elsewhere
ATTENTION_IMPLS = ("dense", "blockwise", "pallas", "auto")
GATELOOP_SCANS = ("auto", "associative", "chunked", "sequential", "heinsen", "chunked_matmul")
# The GateLoop mixers' recurrence. auto: lax.scan ("sequential") on CPU, where it measured fastest,
# associative_scan on GPU/TPU (torch: its own blocked scan for auto/associative/chunked/sequential);
# heinsen: the reference's log-space scan (both backends); chunked_matmul: the operator as masked
# matmuls inside chunks of gateloop.chunk_size positions and a scan over chunk states (both backends)


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _require_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not known; valid choices: {', '.join(choices)}")


def _require_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r} must be a bool (true or false)")


def _check_field_types(obj, prefix: str) -> None:
    """Booleans must be bools and numbers numbers (a JSON 'no' or null is refused by name)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        name = f"{prefix}{f.name}"
        optional = type(None) in typing.get_args(hint)
        if value is None:
            if not optional:
                raise ValueError(f"{name}=None is not allowed: it must be a {_type_name(hint)}")
            continue
        base = _base_type(hint)
        if base is bool:
            _require_bool(name, value)
        elif base is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name}={value!r} must be an integer")
        elif base is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name}={value!r} must be a number")
        elif base is str and not isinstance(value, str):
            raise ValueError(f"{name}={value!r} must be a string")


@dataclasses.dataclass(frozen=True)
class RippleConfig:
    """RippleGPT attention options (mixer="ripple")."""

    decay_init: float = -0.8  # lambda_h at init; its absolute value is the slope of the decay bias

    def __post_init__(self) -> None:
        _check_field_types(self, "ripple.")


@dataclasses.dataclass(frozen=True)
class WaveConfig:
    """Wave-Native GPT options (embedding="wave", mixer="wave", mlp="wave", head="wave_collapse")."""

    n_waves: int = 16  # wave components per token / per head
    n_harmonics: int = 4  # harmonics 1f..Hf of each wave (embedding)
    attention: str = "interference"  # mixer="wave": interference | physics | pure
    kernel: str = "elu1"  # pure: elu1 | sigmoid | exp | linear (= identity)
    mode: str = "quadratic"  # pure: quadratic (T^2) | linear (chunked, O(T) memory)
    chunk_size: int = 64  # pure linear mode: chunk length
    activation: str = "sin"  # mlp="wave": sin (sin x + 0.1 x) | gelu_sin (gelu x + 0.1 sin x)
    embed_ratio: float = 0.0  # physics embedding: share r of the standard embedding, (1-r) wave + r std
    embedding: str = "physics"  # embedding="wave": physics | blend (docs/wave.md, "Versions")

    def __post_init__(self) -> None:
        _check_field_types(self, "wave.")
        for name in ("n_waves", "n_harmonics", "chunk_size"):
            _require_positive_int(f"wave.{name}", getattr(self, name))
        _require_choice("wave.attention", self.attention, WAVE_ATTENTIONS)
        _require_choice("wave.kernel", self.kernel, WAVE_KERNELS)
        _require_choice("wave.mode", self.mode, WAVE_MODES)
        _require_choice("wave.activation", self.activation, WAVE_ACTIVATIONS)
        _require_choice("wave.embedding", self.embedding, WAVE_EMBEDDINGS)
        if not 0.0 <= self.embed_ratio <= 1.0:
            raise ValueError(f"wave.embed_ratio={self.embed_ratio} must be in [0, 1]")
        if self.embedding == "blend" and self.embed_ratio != 0.0:
            raise ValueError(
                f"wave.embed_ratio={self.embed_ratio} applies to wave.embedding='physics' only; "
                "wave.embedding='blend' learns its share (sigmoid(wave_ratio)): leave wave.embed_ratio at 0"
            )


@dataclasses.dataclass(frozen=True)
class GateLoopConfig:
    """GateLoop options (mixer="gateloop" | "simple_gateloop" | "hybrid"); docs/gateloop.md."""

    heads: int | None = None  # None: max heads (= dim_inner, head dim 1)
    dim_inner: int | None = None  # None: n_embd
    frac_gradient: float = 0.9  # gradient scale through z = x W_a + b (reaches W_a, b and x)
    sub_ln: bool = False  # LayerNorm(dim_inner) on the recurrence output
    ablate_complex: bool = False  # a = sign(Re z) sigmoid|Re z| (real)
    ablate_state_transition: bool = False  # a = 1 (cumulative sum of k v^T)
    checkpoint: bool = False  # recompute the recurrence in the backward (memory)
    post_ln: bool = False  # simple_gateloop / hybrid: LayerNorm on the layer output
    hybrid_layers: int = 2  # hybrid: the first N blocks get a SimpleGateLoopLayer
    scan: str = "auto"  # see GATELOOP_SCANS
    chunk_size: int = 64  # chunked_matmul (and JAX "chunked"): positions per chunk
    swish_gating: bool = True  # gateloop: SiLU(x W_g) output gate; False: none, and no output
    # projection when dim_inner == n_embd (the reference's add_swish_gating=False)
    prenorm: bool = True  # simple_gateloop / hybrid: RMSNorm on the layer input

    def __post_init__(self) -> None:
        _check_field_types(self, "gateloop.")
        _require_positive_int("gateloop.chunk_size", self.chunk_size)
        for name in ("heads", "dim_inner"):
            if getattr(self, name) is not None:
                _require_positive_int(f"gateloop.{name}", getattr(self, name))
        if not 0.0 < self.frac_gradient <= 1.0:
            raise ValueError(f"gateloop.frac_gradient={self.frac_gradient} must be in (0, 1]")
        if self.hybrid_layers < 0:
            raise ValueError(f"gateloop.hybrid_layers={self.hybrid_layers!r} must be a non-negative integer")
        _require_choice("gateloop.scan", self.scan, GATELOOP_SCANS)


# name of the nested option group -> its dataclass
GROUPS: dict[str, type] = {"ripple": RippleConfig, "wave": WaveConfig, "gateloop": GateLoopConfig}

# flat names of earlier versions (still accepted in overrides and old config.json files)
LEGACY_NAMES: dict[str, str] = {
    "ripple_decay_init": "ripple.decay_init",
    "n_waves": "wave.n_waves",
    "n_harmonics": "wave.n_harmonics",
    **{f"wave_{f}": f"wave.{f}" for f in ("attention", "kernel", "mode", "chunk_size", "activation", "embed_ratio",
                                           "embedding")},
    **{f"gateloop_{f.name}": f"gateloop.{f.name}" for f in dataclasses.fields(GateLoopConfig)},
}


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
    final_norm: bool = True  # pre-norm only: False leaves out the norm after the last block
    tie_embeddings: bool = True

    mlp_hidden: int | None = None  # None: the MLP kind's own default width (4x, or 8/3x for ripple)
    mlp_bias: bool = True
    attn_out_proj: bool = True  # ripple: the reference has none (False in the preset)
    # attention / ripple without a cache: "dense" materialises the (B, H, T, T) scores; "blockwise"
    # runs attention_block queries at a time, recomputed in the backward, so memory grows
    # linearly in T (no attention-weight dropout there: use dropout=0 or eval mode); "pallas" is
    # a flash kernel with tiles of min(attention_block, 128) (a power of two >= 16; no weight
    # dropout either), for GPU/TPU; "auto" picks pallas there and dense on CPU
    attention_impl: str = "dense"
    attention_block: int = 256

    # JAX: True runs identical blocks as one lax.scan body: compile time flat in depth, and less
    # temporary memory at long sequences (ripplegpt-small, 8 x 1024 tokens: 1.7 vs 3.3 GB on CPU).
    # False (default) unrolls them: 3-15% shorter training steps at the seed sizes on CPU (the scan
    # zero-fills stacked residual buffers and restacks the weights every step)
    scan_layers: bool = False

    init_std: float = 0.02
    scaled_residual_init: bool = True  # residual projections N(0, std/sqrt(2 n_layer)) (GPT-2)

    ripple: RippleConfig = dataclasses.field(default_factory=RippleConfig)
    wave: WaveConfig = dataclasses.field(default_factory=WaveConfig)
    gateloop: GateLoopConfig = dataclasses.field(default_factory=GateLoopConfig)

    def __post_init__(self) -> None:
        for group, cls in GROUPS.items():
            if not isinstance(getattr(self, group), cls):
                raise ValueError(f"{group} must be a {cls.__name__}, got {type(getattr(self, group)).__name__}")
        _check_field_types(self, "")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            _require_positive_int(name, getattr(self, name))
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}"
            )
        if self.mlp_hidden is not None:
            _require_positive_int("mlp_hidden", self.mlp_hidden)
        _require_positive_int("attention_block", self.attention_block)
        _require_choice("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        if self.attention_impl in ("pallas", "auto"):
            check_pallas_block(self.attention_block, context=f" of attention_impl={self.attention_impl!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps} must be > 0")
        if not self.init_std > 0:
            raise ValueError(f"init_std={self.init_std} must be > 0")
        for field, choices in (*SLOTS.items(), ("norm", NORMS)):
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
        if self.tie_embeddings and self.embedding == "wave":
            raise ValueError("tie_embeddings=True needs a token table; embedding='wave' has none to tie "
                             "(set tie_embeddings=False)")
        if self.tie_embeddings and self.head != "linear":
            raise ValueError(f"tie_embeddings=True needs head='linear', got head={self.head!r}")
        dim_inner = self.gateloop.dim_inner or self.n_embd
        heads = self.gateloop.heads or dim_inner
        if dim_inner % heads:
            raise ValueError(
                f"gateloop.heads={heads} must divide the GateLoop inner dimension "
                f"gateloop.dim_inner={dim_inner} (None means n_embd={self.n_embd})"
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
        """A copy with some fields changed (nested, dotted or legacy flat names; validated again)."""
        return ModelConfig.from_dict(merge_fields(self.to_dict(), changes))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of all fields, option groups as nested dicts (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of all fields, sorted."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a dict (nested, dotted or legacy flat names); unknown keys raise a
        ValueError that lists them."""
        fields = merge_fields({}, data)
        groups = {}
        for group, group_cls in GROUPS.items():
            values = fields.pop(group, {})
            known = {f.name for f in dataclasses.fields(group_cls)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise ValueError(
                    f"unknown ModelConfig fields: {', '.join(f'{group}.{k}' for k in unknown)}; "
                    f"{group} has: {', '.join(sorted(known))}"
                )
            groups[group] = group_cls(**values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}")
        return cls(**fields, **groups)

    def flat_dict(self) -> dict[str, Any]:
        """{dotted.name: value} of every field (option groups as 'gateloop.heads', ...)."""
        out = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def diff(self, other: ModelConfig) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ, as {dotted.field: (self_value, other_value)}."""
        a, b = self.flat_dict(), other.flat_dict()
        return {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}


def merge_fields(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` (a ModelConfig dict, option groups nested) with `changes` applied; a change may be
    a top-level field, a group as a dict or dataclass, 'group.field', or a legacy flat name."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in changes.items():
        key = LEGACY_NAMES.get(key, key)
        group, dot, leaf = key.partition(".")
        if dot:
            if group not in GROUPS:
                raise ValueError(f"unknown ModelConfig field {key!r}: {group!r} is not an option group "
                                 f"(groups: {', '.join(GROUPS)})")
            out.setdefault(group, {})[leaf] = value
        elif key in GROUPS and isinstance(value, Mapping):
            out[key] = {**out.get(key, {}), **value}
        elif key in GROUPS and dataclasses.is_dataclass(value):
            out[key] = dataclasses.asdict(value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# Typed command-line assignments: "--set gateloop.heads=4"

_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _base_type(hint) -> type:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return args[0]
    return hint


def _type_name(hint) -> str:
    base = {bool: "bool (true or false)", int: "integer", float: "number", str: "string"}.get(_base_type(hint), str(hint))
    return base + (" or none" if type(None) in typing.get_args(hint) else "")


def field_hint(path: str):
    """The declared type of a ModelConfig field named 'field' or 'group.field' (legacy names too)."""
    path = LEGACY_NAMES.get(path, path)
    group, dot, leaf = path.partition(".")
    cls, name = (GROUPS.get(group), leaf) if dot else (ModelConfig, path)
    hints = typing.get_type_hints(cls) if cls is not None else {}
    if name not in hints or (not dot and name in GROUPS):
        valid = [f for f in ModelConfig().flat_dict()]
        raise ValueError(f"unknown ModelConfig field {path!r}; valid fields: {', '.join(valid)}")
    return hints[name]


def parse_value(path: str, text: str) -> Any:
    """`text` parsed as the type of field `path` ('vocab_size', 'gateloop.heads', ...); a
    ValueError names the field, its type and the text when it does not parse."""
    hint = field_hint(path)
    raw = text.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        raw = raw[1:-1]
    if raw.lower() in ("none", "null"):
        if type(None) in typing.get_args(hint):
            return None
        raise ValueError(f"{path} cannot be none: it expects a {_type_name(hint)}")
    base = _base_type(hint)
    try:
        if base is bool:
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError
        if base is int:
            return int(raw)
        if base is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError
            return value
        return raw
    except ValueError:
        raise ValueError(f"{path}={text!r}: expected a {_type_name(hint)}") from None


def parse_assignment(item: str) -> tuple[str, Any]:
    """('gateloop.heads', 4) from 'gateloop.heads=4', typed by the field; ValueError otherwise."""
    key, eq, text = item.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ValueError(f"{item!r} must look like FIELD=VALUE (e.g. gateloop.heads=4)")
    return key, parse_value(key, text)


# Presets. Names are API. Each preset has sizes; "small" is the seed's own size.

_SIZES: dict[str, dict[str, dict[str, Any]]] = {}
_PRESETS: dict[str, dict[str, Any]] = {}
_DEFAULT_SIZE: dict[str, str] = {}
_CHECKS: dict[str, Callable[[ModelConfig], None]] = {}


def register_preset(
    name: str, base: dict[str, Any], sizes: dict[str, dict[str, Any]], default_size: str = "small",
    check: Callable[[ModelConfig], None] | None = None,
) -> None:
    """Register a preset: base fields plus named sizes ("nano" for tests, "small" = seed).

    check(cfg), if given, runs on every config `preset(name, ...)` builds (after the overrides) and
    raises ValueError for options the preset's version does not have.
    """
    _PRESETS[name] = dict(base)
    _SIZES[name] = {k: dict(v) for k, v in sizes.items()}
    _DEFAULT_SIZE[name] = default_size
    if check is not None:
        _CHECKS[name] = check


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
    fields = merge_fields(merge_fields(_PRESETS[name], _SIZES[name][size]), overrides)
    cfg = ModelConfig.from_dict(fields)
    if name in _CHECKS:
        _CHECKS[name](cfg)
    return cfg


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
# wave attention (interference by default; physics / pure via wave.attention), sin(x) + 0.1 x MLP,
# wave-collapse head (LayerNorm + biased projection), untied. "small" is the seed size (BPE
# vocab 1024, context 256); medium/large follow the seed's wave_experiments.py model sizes.
_WAVE_SIZES = {
    "nano": dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, wave=dict(n_waves=8, n_harmonics=4)),
    "small": dict(vocab_size=1024, block_size=256, n_layer=8, n_head=8, n_embd=384, wave=dict(n_waves=48, n_harmonics=4)),
    "medium": dict(vocab_size=1024, block_size=384, n_layer=10, n_head=8, n_embd=512, wave=dict(n_waves=64, n_harmonics=4)),
    "large": dict(vocab_size=1024, block_size=512, n_layer=12, n_head=12, n_embd=768, wave=dict(n_waves=96, n_harmonics=4)),
}
register_preset(
    "wave_gpt",
    dict(
        embedding="wave", mixer="wave", mlp="wave", residual="add", head="wave_collapse",
        norm="layernorm", bias=True, tie_embeddings=False, dropout=0.1, scaled_residual_init=False,
        wave=dict(attention="interference", kernel="elu1", mode="quadratic", activation="sin"),
    ),
    _WAVE_SIZES,
)

# The headline run of Wave-Native GPT (val loss 0.8877, 15,433,657 parameters at "small"): the code at
# spectral_cnn commit c04e261 (wave_gpt.py identical at 38a89ad). Blend embedding (random init,
# LayerNorm(s wave + (1 - s) embed), s = sigmoid(wave_ratio) learned), interference attention only,
# gelu(x) + 0.1 sin(x) MLP, no final LayerNorm before the collapse head. Train it with QFE unprojected
# (TrainConfig(qfe_project=False)) to match that run. docs/wave.md, "Versions".
_HEADLINE_FIXED = (
    # (field, the version's value, what the version has): pure attention, its kernels, its linear mode
    # and the physics embedding came later
    ("mixer", "wave", "only interference attention"),
    ("wave.attention", "interference", "only interference attention"),
    ("wave.kernel", "elu1", "only interference attention"),
    ("wave.mode", "quadratic", "only interference attention"),
    ("wave.chunk_size", 64, "only interference attention"),
    ("embedding", "wave", "only the blend wave embedding"),
    ("wave.embedding", "blend", "only the blend wave embedding"),
)


def _check_headline(cfg: ModelConfig) -> None:
    values = cfg.flat_dict()
    for field, value, has in _HEADLINE_FIXED:
        if values[field] != value:
            raise ValueError(
                f"{field}={values[field]!r} is not available in preset 'wave_gpt-headline': the headline "
                f"version (spectral_cnn c04e261) has {has}, so {field} must be {value!r}; use preset "
                "'wave_gpt' for the other wave options"
            )


register_preset(
    "wave_gpt-headline",
    dict(
        embedding="wave", mixer="wave", mlp="wave", residual="add", head="wave_collapse", norm="layernorm",
        final_norm=False, bias=True, tie_embeddings=False, dropout=0.1, scaled_residual_init=False,
        wave=dict(embedding="blend", attention="interference", kernel="elu1", mode="quadratic",
                  activation="gelu_sin"),
    ),
    _WAVE_SIZES,
    check=_check_headline,
)

# The seed's own control ("classic", WaveGPT model_type="standard"): token + learned position
# embedding, softmax attention with biases, 4x GELU MLP, final LayerNorm, untied bias-free head,
# every linear N(0, 0.02). Same sizes as wave_gpt (wave options unused).
register_preset(
    "classic",
    dict(
        embedding="learned", mixer="attention", mlp="gelu", residual="add", head="linear",
        norm="layernorm", bias=True, tie_embeddings=False, dropout=0.1, scaled_residual_init=False,
    ),
    _WAVE_SIZES,
)

# GateLoop transformer (lucidrains/gateloop-transformer 0.2.5 `Transformer`, Katsch 2023): token
# embedding, GateLoopedAttention with max heads (gateloop.heads=None), 4x exact-GELU feed-forward
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
