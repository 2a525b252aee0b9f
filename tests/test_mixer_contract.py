"""The mixer contract (physnets_core.mixer.Mixer) for every registered mixer and its options.

For each case (a mixer name from physnets_core.config.SLOTS["mixer"] plus option overrides), one
test (test_mixer_contract[case]) checks in float64:
- causal: changing the input at position t changes no output before t (exactly), in both backends;
- the cache: running a sequence in pieces through `init_cache(batch, max_len, dtype, device=None)`
  and `mixer(x, cache=cache) -> (y, new_cache)` equals one pass, in both backends, and both
  backends end with the same cache (same keys, shapes and values);
- float64 cross-backend parity of the output and of the gradients w.r.t. every parameter and the
  input (weights converted JAX -> torch by physnets_torch.convert); float32 too for the cases
  whose code depends on the dtype (complex64 recurrences, the exp kernel's cap, chunked sums).
Then the same rules for each mixer inside a whole Decoder (embedding positions, per-block caches):
causal in the tokens, cached prompt + steps equal the full pass (past block_size where the model
extrapolates), same logits and caches in both backends.

Tolerances: float64 1e-10 relative to scale (DESIGN section 3). float32 1e-5 for the same
algorithm; 1e-4 for the GateLoop mixers, whose two backends scan in different orders (lax.scan or
associative_scan vs torch's chunked scan: ~2e-5 in gradients, which run the recurrence backwards).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import physnets_jax.layers as jl
import physnets_torch.layers as tl
from parity_tests.harness import assert_close, compare, jax_value_and_grads, twin
from physnets_core.config import SLOTS, ModelConfig, preset
from physnets_core.mixer import Mixer
from physnets_jax.model import Decoder as JDecoder
from physnets_torch.model import Decoder as TDecoder

BASE = ModelConfig.from_dict(dict(
    vocab_size=17, block_size=16, n_layer=2, n_head=2, n_embd=16, embedding="token", tie_embeddings=False,
    dropout=0.0, bias=True, init_std=0.2, wave=dict(n_waves=4, n_harmonics=3, chunk_size=3),
))
B, T, D = 2, 8, 16
# from an empty cache, across a chunk edge (wave chunk_size 3), a single step, across another edge;
# two piece lengths only: each new input shape is one more XLA compilation
PIECES = [(0, 1), (1, 4), (4, 5), (5, 8)]

# case -> (mixer, overrides, layer_idx); the hybrid mixer carries a gate loop in blocks < hybrid_layers
CASES: dict[str, tuple[str, dict, int]] = {
    "attention": ("attention", {}, 0),
    "attention-blockwise": ("attention", {"attention_impl": "blockwise", "attention_block": 3}, 0),
    "ripple": ("ripple", {}, 0),
    "ripple-out_proj-blockwise": ("ripple", {"attn_out_proj": True, "attention_impl": "blockwise",
                                             "attention_block": 3}, 0),
    "wave-interference": ("wave", {"wave.attention": "interference"}, 0),
    "wave-physics": ("wave", {"wave.attention": "physics"}, 0),
    **{
        f"wave-pure-{kernel}-{mode}": ("wave", {"wave.attention": "pure", "wave.kernel": kernel, "wave.mode": mode}, 0)
        for mode in ("quadratic", "linear")
        for kernel in ("elu1", "sigmoid", "exp", "linear")
    },
    "gateloop-max_heads": ("gateloop", {}, 0),
    # dk = dv = 8 (outer-product state), inner width != n_embd, sub-LayerNorm, recomputed backward
    "gateloop-dim_inner24-heads3-sub_ln-checkpoint": (
        "gateloop", {"gateloop.dim_inner": 24, "gateloop.heads": 3, "gateloop.sub_ln": True,
                     "gateloop.checkpoint": True}, 0),
    "gateloop-ablate_complex": ("gateloop", {"gateloop.ablate_complex": True}, 0),
    "gateloop-ablate_state_transition": ("gateloop", {"gateloop.ablate_state_transition": True}, 0),
    # scan "auto" is lax.scan on CPU; the associative scan (the GPU/TPU default) and the chunked one
    "gateloop-heads2-associative": ("gateloop", {"gateloop.heads": 2, "gateloop.scan": "associative"}, 0),
    "gateloop-chunked": ("gateloop", {"gateloop.scan": "chunked"}, 0),
    # the chunked matmul form (chunks of 3 over 8 positions: a ragged last chunk, pieces across edges)
    "gateloop-heads4-chunked_matmul": (
        "gateloop", {"gateloop.heads": 4, "gateloop.scan": "chunked_matmul", "gateloop.chunk_size": 3}, 0),
    "gateloop-heads4-chunked_matmul-ablate_complex": (
        "gateloop", {"gateloop.heads": 4, "gateloop.scan": "chunked_matmul", "gateloop.chunk_size": 3,
                     "gateloop.ablate_complex": True}, 0),
    "gateloop-no_swish": ("gateloop", {"gateloop.swish_gating": False}, 0),
    "simple_gateloop": ("simple_gateloop", {}, 0),
    "simple_gateloop-associative": ("simple_gateloop", {"gateloop.scan": "associative"}, 0),
    "simple_gateloop-post_ln-chunked": ("simple_gateloop", {"gateloop.post_ln": True, "gateloop.scan": "chunked"}, 0),
    "simple_gateloop-heinsen": ("simple_gateloop", {"gateloop.scan": "heinsen"}, 0),
    "simple_gateloop-no_prenorm-chunked_matmul": (
        "simple_gateloop", {"gateloop.prenorm": False, "gateloop.scan": "chunked_matmul", "gateloop.chunk_size": 3}, 0),
    # block 0 of a hybrid model: gate loop + attention (later blocks are plain attention)
    "hybrid": ("hybrid", {"gateloop.post_ln": True, "gateloop.hybrid_layers": 1}, 0),
}
RECURRENT = {"gateloop", "simple_gateloop"}  # state size independent of max_len
# float32 parity where the dtype changes the code path: the softmax kernels' masking, the exp
# kernel's cap (exp_cap(dtype)), the linear mode's chunked sums and eps, complex64 recurrences
FLOAT32 = {"attention", "wave-pure-exp-quadratic", "wave-pure-elu1-linear", "gateloop-max_heads",
           "gateloop-heads2-associative", "gateloop-heads4-chunked_matmul", "simple_gateloop-post_ln-chunked",
           "simple_gateloop-heinsen"}


def _cfg(case: str) -> ModelConfig:
    mixer, overrides, _ = CASES[case]
    return BASE.replace(mixer=mixer, **overrides)


def _randomise(jax_module, seed=1):
    """Move every parameter (biases, gains, decays, phases too) off its init so gradients are generic."""
    rng = np.random.default_rng(seed)
    state = nnx.state(jax_module, nnx.Param)
    nnx.update(jax_module, jax.tree.map(lambda x: x + 0.2 * rng.standard_normal(x.shape).astype(x.dtype), state))


def _twins(case: str, dtype: str):
    """The JAX mixer and its torch twin with the same (randomised) weights in `dtype`, eval mode."""
    mixer, _, layer_idx = CASES[case]
    cfg = _cfg(case)
    jm = jl.MIXERS[mixer](cfg, layer_idx, rngs=nnx.Rngs(0))
    tm = tl.MIXERS[mixer](cfg, layer_idx)
    _randomise(jm)
    return twin(jm, tm, dtype)


def _x(seed=0, shape=(B, T, D)):
    return np.random.default_rng(seed).standard_normal(shape)


@nnx.jit
def _jax_call(module, x):
    return module(x)


@nnx.jit
def _jax_call_cached(module, x, cache):
    return module(x, cache=cache)


def _run(module, x, backend, cache=None):
    """module(x) (with a cache: (y, cache)) as numpy. JAX calls are jitted: one compilation per
    module structure and shape. A mixer's whole-sequence pass is the output of the parity check's
    compiled loss-and-gradients program (harness.jax_value_and_grads caches it), so the checks of
    a case compile it once."""
    if backend == "jax":
        if cache is None and not isinstance(module, JDecoder):
            return jax_value_and_grads(module, _sum_sq, x)[1]
        if cache is None:
            return np.asarray(_jax_call(module, jnp.asarray(x)))
        y, cache = _jax_call_cached(module, jnp.asarray(x), cache)
        return np.asarray(y), cache
    with torch.no_grad():
        out = module(torch.from_numpy(x)) if cache is None else module(torch.from_numpy(x), cache=cache)
    return out.numpy() if cache is None else (out[0].numpy(), out[1])


def _leaves(cache) -> dict[str, np.ndarray]:
    """A (nested) cache dict as {dotted key: numpy array}."""
    flat = {}
    for key, value in cache.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _leaves(value).items()})
        else:
            flat[key] = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return flat


def test_every_registered_mixer_has_cases():
    """A new mixer in SLOTS['mixer'] must join this contract (and both registries implement it)."""
    assert {mixer for mixer, _, _ in CASES.values()} == set(SLOTS["mixer"])
    cfg = BASE
    for name in SLOTS["mixer"]:
        assert isinstance(jl.MIXERS[name](cfg.replace(mixer=name), 0, rngs=nnx.Rngs(0)), Mixer), name
        assert isinstance(tl.MIXERS[name](cfg.replace(mixer=name), 0), Mixer), name


def _sum_sq(m, x):
    y = m(x)
    weights = np.linspace(-1.0, 2.0, y.shape[-1])  # a generic loss: every output feature counts
    if isinstance(y, torch.Tensor):
        return (y**2 * torch.as_tensor(weights, dtype=y.dtype)).sum(), y
    return jnp.sum(y**2 * jnp.asarray(weights, y.dtype)), y


def _check_causal(jm, tm):
    """Changing x at position t changes no output before t (bit for bit) and does change output t."""
    x = _x()
    t = 4
    changed = x.copy()
    changed[:, t] += 3.0
    for backend, module in (("jax", jm), ("torch", tm)):
        y, y2 = _run(module, x, backend), _run(module, changed, backend)
        np.testing.assert_array_equal(y[:, :t], y2[:, :t], err_msg=f"{backend}: output before t changed")
        assert np.abs(y[:, t] - y2[:, t]).max() > 1e-6, f"{backend}: output at t did not change"


def _check_cache(jm, tm, recurrent: bool):
    """Pieces [0,1) [1,4) [4,5) [5,8) through the cache equal one pass over [0,8), in each backend;
    the final caches agree across backends (keys, shapes, values); recurrent state sizes do not
    depend on max_len."""
    x = _x(seed=1)
    caches = {}
    for backend, module, dtype in (("jax", jm, jnp.float64), ("torch", tm, torch.float64)):
        whole = _run(module, x, backend)
        cache = module.init_cache(B, T, dtype, device=None)
        pieces = []
        for lo, hi in PIECES:
            y, cache = _run(module, x[:, lo:hi], backend, cache)
            pieces.append(y)
        assert_close(np.concatenate(pieces, axis=1), whole, 1e-10, f"{backend}: pieces vs one pass")
        caches[backend] = _leaves(cache)
    assert caches["jax"].keys() == caches["torch"].keys()
    for key, value in caches["jax"].items():
        assert_close(value, caches["torch"][key], 1e-10, f"cache[{key}]")
        if key.endswith("pos"):
            assert int(value) == T
    if recurrent:
        for module, dtype in ((jm, jnp.float32), (tm, torch.float32)):
            short = {k: v.shape for k, v in _leaves(module.init_cache(B, 8, dtype)).items()}
            assert short == {k: v.shape for k, v in _leaves(module.init_cache(B, 8192, dtype)).items()}


@pytest.mark.parametrize("case", CASES)
def test_mixer_contract(x64, case):
    """float64: causal in both backends; pieces through the cache equal one pass, with equal final
    caches across backends; JAX vs torch loss, output, every parameter gradient and the input
    gradient. One test per case: its three checks share one compiled JAX program (the whole-pass
    loss and gradients), which pytest-xdist would otherwise compile on both workers."""
    jm, tm = _twins(case, "float64")
    _check_causal(jm, tm)
    _check_cache(jm, tm, recurrent=CASES[case][0] in RECURRENT)
    compare(jm, tm, _sum_sq, _sum_sq, [_x(seed=2)], "float64")


@pytest.mark.parametrize("case", sorted(FLOAT32))
def test_parity_float32(case):
    """JAX vs torch in float32 (tolerance 1e-5, 1e-4 for the GateLoop scans: module docstring)."""
    tol = 1e-4 if CASES[case][0] in RECURRENT | {"hybrid"} else None
    with jax.enable_x64(False):
        jm, tm = _twins(case, "float32")
        compare(jm, tm, _sum_sq, _sum_sq, [_x(seed=2).astype(np.float32)], "float32", tol=tol)


# ------------------------------------------------------------------------------ inside a Decoder

MODELS = {
    "attention": preset("gpt", "nano", dropout=0.0, n_embd=16, block_size=12),  # learned positions
    "ripple": preset("ripplegpt", "nano", dropout=0.0, n_embd=16, block_size=8),
    "wave": preset("wave_gpt", "nano", dropout=0.0, n_embd=16, block_size=8, **{"wave.chunk_size": 4}),
    "gateloop": preset("gateloop", "nano", n_embd=16, block_size=8),
    "gateloop-chunked_matmul": preset("gateloop", "nano", n_embd=16, block_size=8, **{
        "gateloop.heads": 2, "gateloop.scan": "chunked_matmul", "gateloop.chunk_size": 4}),
    "simple_gateloop": preset("gateloop", "nano", mixer="simple_gateloop", n_embd=16, block_size=8),
    "hybrid": preset("gateloop", "nano", mixer="hybrid", n_embd=16, block_size=8, **{"gateloop.hybrid_layers": 1}),
}
MODEL_PIECES = [(0, 5), (5, 6), (6, 11), (11, 12)]  # 12 > block_size 8 where positions allow


def test_every_registered_mixer_has_a_model():
    assert {cfg.mixer for cfg in MODELS.values()} == set(SLOTS["mixer"])


@pytest.mark.parametrize("model", MODELS)
def test_decoder_causal_and_cached_equals_full_pass(x64, model):
    """A whole Decoder (float64): changing token t changes no logits before t; a prompt, single
    steps and a chunk through the cache equal the full pass (beyond block_size for models without
    learned positions); logits and final caches equal across backends."""
    cfg = MODELS[model]
    jm, tm = twin(JDecoder(cfg, rngs=nnx.Rngs(0)), TDecoder(cfg), "float64")
    n = MODEL_PIECES[-1][1]
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, (B, n))
    changed = tokens.copy()
    changed[:, 6] = (changed[:, 6] + 1) % cfg.vocab_size
    full = {}
    for backend, module, dtype in (("jax", jm, jnp.float64), ("torch", tm, torch.float64)):
        full[backend], other = _run(module, tokens, backend), _run(module, changed, backend)
        np.testing.assert_array_equal(full[backend][:, :6], other[:, :6], err_msg=f"{backend}: not causal")
        assert np.abs(full[backend][:, 6] - other[:, 6]).max() > 1e-6
        cache, steps = module.init_cache(B, n, dtype), []
        for lo, hi in MODEL_PIECES:
            logits, cache = _run(module, tokens[:, lo:hi], backend, cache)
            steps.append(logits)
        assert_close(np.concatenate(steps, axis=1), full[backend], 1e-10, f"{backend}: cached vs full")
        full[backend + "_cache"] = {f"{i}.{k}": v for i, c in enumerate(cache["layers"]) for k, v in _leaves(c).items()}
        assert int(cache["pos"]) == n
    assert_close(full["jax"], full["torch"], 1e-10, "logits jax vs torch")
    assert full["jax_cache"].keys() == full["torch_cache"].keys()
    for key, value in full["jax_cache"].items():
        assert_close(value, full["torch_cache"][key], 1e-10, f"cache[{key}]")


def test_learned_positions_model_refuses_beyond_block_size():
    """The Decoder cache of a model with learned positions stops at block_size (both backends)."""
    cfg = MODELS["attention"]
    with pytest.raises(ValueError, match="max_len=13 exceeds block_size=12"):
        JDecoder(cfg, rngs=nnx.Rngs(0)).init_cache(1, 13)
    with pytest.raises(ValueError, match="max_len=13 exceeds block_size=12"):
        TDecoder(cfg).init_cache(1, 13)

