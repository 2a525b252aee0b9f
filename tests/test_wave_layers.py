"""Wave-Native GPT layers: seed-formula fidelity (numpy references), the exp kernel's overflow
guard, presets and bad input, in both backends. Causality and caches: tests/test_mixer_contract.py."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import physnets_jax.layers as jl
import physnets_torch.layers as tl
from physnets_core.config import ModelConfig, preset
from physnets_jax.layers.wave import GOLDEN_ANGLE, PHI, wave_activation, wave_embedding_init
from physnets_jax.model import Decoder, build_model, cast_params, count_params
from physnets_torch.convert import jax_to_torch, load_jax_into_torch
from physnets_torch.layers.wave import wave_embedding_init as torch_wave_embedding_init
from physnets_torch.model import Decoder as TDecoder
from tests import wave_reference as ref

BASE = ModelConfig.from_dict(dict(
    vocab_size=40, block_size=16, n_layer=1, n_head=2, n_embd=16, n_waves=4, n_harmonics=3,
    embedding="wave", mixer="wave", mlp="wave", head="wave_collapse", tie_embeddings=False, wave_chunk_size=3,
))
VARIANTS = [("interference", "elu1", "quadratic"), ("physics", "elu1", "quadratic")] + [
    ("pure", k, m) for m in ("quadratic", "linear") for k in ("elu1", "sigmoid", "exp", "linear")
]
IDS = [f"{v}-{k}-{m}" for v, k, m in VARIANTS]


def _cfg(variant, kernel, mode, **kw):
    return BASE.replace(wave_attention=variant, wave_kernel=kernel, wave_mode=mode, **kw)


def _torch_params(module):
    return {k: v.numpy().astype(np.float64) for k, v in jax_to_torch(module).items()}


@pytest.mark.parametrize("variant, kernel, mode", VARIANTS, ids=IDS)
def test_mixer_matches_seed_formula(variant, kernel, mode, x64):
    cfg = _cfg(variant, kernel, mode)
    mixer = jl.MIXERS["wave"](cfg, 0, rngs=nnx.Rngs(1))
    cast_params(mixer, jnp.float64)
    mixer.eval()
    x = np.random.default_rng(0).standard_normal((2, 7, 16))
    got = np.asarray(mixer(jnp.asarray(x)))
    want = ref.wave_attention(_torch_params(mixer), x, variant=variant, H=2, W=4, kernel=kernel, mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_embedding_init_is_the_seed_physics_init():
    init = wave_embedding_init(10, 5, 4)
    for key, value in torch_wave_embedding_init(10, 5, 4).items():
        np.testing.assert_array_equal(init[key], value)
    # token 3 (mass 1/4 -> 1/sqrt(mass) = 2), wave 4 (offset +2 from the centre)
    assert init["base_freqs"][3, 4] == pytest.approx(math.log1p(2.0) * PHI ** (0.3 * 2))
    assert init["base_freqs"][0, 2] == pytest.approx(math.log1p(1.0))
    np.testing.assert_allclose(init["harmonic_amps"][7, 1], [1, 1 / 2, 1 / 3, 1 / 4])
    assert init["phases"][2, 3] == pytest.approx((5 * GOLDEN_ANGLE) % (2 * math.pi))
    assert GOLDEN_ANGLE == pytest.approx(math.radians(137.50776), abs=1e-6)


@pytest.mark.parametrize("ratio", [0.0, 0.3])
def test_embedding_matches_seed_formula(ratio, x64):
    cfg = BASE.replace(wave_embed_ratio=ratio)
    emb = jl.EMBEDDINGS["wave"](cfg, rngs=nnx.Rngs(0))
    cast_params(emb, jnp.float64)
    tokens = np.random.default_rng(5).integers(0, 40, (2, 5))
    got = np.asarray(emb(jnp.asarray(tokens), 3))
    r = float(np.float32(ratio))  # the ratio is float32 state
    want = ref.wave_embedding(_torch_params(emb), tokens, n_harmonics=3, start_pos=3, ratio=r)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # RMS scaling: every output vector has rms |output_scale| = 1 at init
    np.testing.assert_allclose(np.sqrt(np.mean(got**2, -1)), 1.0, rtol=1e-9)


def test_embedding_phase_and_frequency_pathways_start_10x():
    emb = jl.EMBEDDINGS["wave"](BASE, rngs=nnx.Rngs(0))
    kernel = np.asarray(emb.wave_to_embed.kernel[...])  # (2WH + 2W, D)
    n = 2 * 4 * 3
    assert kernel.shape == (n + 8, 16)
    ratio = kernel[n:].std() / kernel[:n].std()
    assert 5 < ratio < 20
    temb = tl.EMBEDDINGS["wave"](BASE)
    w = temb.wave_to_embed.weight.detach().numpy()
    assert 5 < w[:, n:].std() / w[:, :n].std() < 20


def test_wave_activation_and_mlp():
    x = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(wave_activation(x), np.sin(np.asarray(x)) + 0.1 * np.asarray(x), rtol=1e-6)
    gelu = 0.5 * np.asarray(x) * (1 + np.vectorize(math.erf)(np.asarray(x) / math.sqrt(2)))
    np.testing.assert_allclose(wave_activation(x, "gelu_sin"), gelu + 0.1 * np.sin(np.asarray(x)), rtol=1e-5, atol=1e-6)
    mlp = jl.MLPS["wave"](BASE, 0, rngs=nnx.Rngs(0))
    xs = np.random.default_rng(6).standard_normal((1, 3, 16)).astype(np.float32)
    p = _torch_params(mlp)
    h = xs @ p["fc1.weight"].T + p["fc1.bias"]
    want = (np.sin(h) + 0.1 * h) @ p["fc2.weight"].T + p["fc2.bias"]
    np.testing.assert_allclose(np.asarray(mlp(jnp.asarray(xs))), want, rtol=1e-4, atol=1e-6)


def test_collapse_head_is_layernorm_then_biased_projection():
    head = jl.HEADS["wave_collapse"](BASE, rngs=nnx.Rngs(0))
    x = np.random.default_rng(7).standard_normal((1, 3, 16)).astype(np.float32)
    p = _torch_params(head)
    n = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    want = (n * p["ln.weight"] + p["ln.bias"]) @ p["proj.weight"].T + p["proj.bias"]
    np.testing.assert_allclose(np.asarray(head(jnp.asarray(x))), want, rtol=1e-4, atol=1e-5)


def test_exp_kernel_never_overflows_in_linear_mode():
    """Linear mode: |q|, |k| <= W^0.25 per entry bound exp; huge inputs give finite outputs and
    gradients (quadratic mode: the threshold tests below)."""
    cfg = _cfg("pure", "exp", "linear")
    m = jl.MIXERS["wave"](cfg, 0, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(8).standard_normal((1, 6, 16)) * 1e6, jnp.float32)
    y, grads = nnx.value_and_grad(lambda mod: jnp.sum(mod(x)))(m)
    assert np.isfinite(np.asarray(y)).all()
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    tm = tl.MIXERS["wave"](cfg, 0)
    load_jax_into_torch(m, tm)
    ty = tm(torch.from_numpy(np.array(x)))
    ty.sum().backward()
    assert torch.isfinite(ty).all()
    assert all(torch.isfinite(p.grad).all() for p in tm.parameters() if p.grad is not None)


# The largest value whose exp is finite: float32 0x42B17217 (exp(88.7228394) overflows: log of
# 2^128 is 88.7228391), float64 log(DBL_MAX) = 709.782712893384.
OVERFLOW_EDGE = {"float32": float(np.float32(88.72283)), "float64": 709.782712893384}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_cap_is_the_overflow_threshold(dtype, request):
    if dtype == "float64":
        request.getfixturevalue("x64")
    from physnets_jax.layers.wave import exp_cap as jax_cap
    from physnets_torch.layers.wave import exp_cap as torch_cap

    edge = OVERFLOW_EDGE[dtype]
    assert jax_cap(np.dtype(dtype)) == edge == torch_cap(getattr(torch, dtype))
    x = np.asarray(edge, dtype)
    above = np.asarray(np.nextafter(x, np.asarray(np.inf, dtype)))
    with np.errstate(over="ignore"):
        assert np.isfinite(np.exp(x)) and np.isinf(np.exp(above))
    assert np.isfinite(np.asarray(jnp.exp(jnp.asarray(x)))) and np.isinf(np.asarray(jnp.exp(jnp.asarray(above))))
    assert torch.isfinite(torch.exp(torch.from_numpy(x))) and torch.isinf(torch.exp(torch.from_numpy(above)))


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("side", ["below", "above"])
def test_exp_kernel_cap_only_where_exp_overflows(side, dtype, backend, request):
    """Quadratic exp kernel with q_t = k_t (k's projections copied from q's), so the largest score is
    g sqrt(W) = 2 g. Below the overflow edge (2 g = edge - 0.5) the output is the seed's uncapped one
    (float32: scores up to 88.2, where a cap at 44 would change everything); above it (2 g = edge +
    10, where the seed's exp is inf) scores are capped at the edge and the output stays finite."""
    if dtype == "float64":
        request.getfixturevalue("x64")
    edge = OVERFLOW_EDGE[dtype]
    top = edge - 0.5 if side == "below" else edge + 10.0
    cfg = _cfg("pure", "exp", "quadratic")
    m = jl.MIXERS["wave"](cfg, 0, rngs=nnx.Rngs(3))
    cast_params(m, jnp.dtype(dtype))
    for k_lin, q_lin in ((m.k_freq, m.q_freq), (m.k_phase, m.q_phase)):
        k_lin.kernel[...], k_lin.bias[...] = q_lin.kernel[...], q_lin.bias[...]
    m.v_proj.kernel[...] = m.v_proj.kernel[...] * 1e-3  # sums of up to 7 terms near exp(edge) stay finite
    m.interference_scale[...] = jnp.full((2, 1, 1), top / 2.0, jnp.dtype(dtype))
    m.eval()
    x = np.random.default_rng(9).standard_normal((1, 7, 16)).astype(dtype)
    if backend == "jax":
        got = np.asarray(m(jnp.asarray(x)))
    else:
        tm = tl.MIXERS["wave"](cfg, 0).to(getattr(torch, dtype)).eval()
        load_jax_into_torch(m, tm)
        with torch.no_grad():
            got = tm(torch.from_numpy(x)).numpy()
    params = _torch_params(m)
    cap = None if side == "below" else edge
    want = ref.wave_attention(params, x.astype(np.float64), variant="pure", H=2, W=4, kernel="exp", score_cap=cap)
    assert np.isfinite(got).all()
    scale = np.abs(want).max()
    assert scale > (1e30 if dtype == "float32" else 1e300)  # exp of scores near the edge, far beyond exp(44)
    # float32: a score near 88 carries ~88 * 6e-8 relative error into exp
    np.testing.assert_allclose(got, want, rtol=0, atol=(2e-5 if dtype == "float32" else 1e-12) * scale)


def test_preset_parameter_counts_are_pinned():
    counts = {}
    for name in ("wave_gpt", "classic"):
        for size in ("nano", "small"):
            cfg = preset(name, size)
            counts[(name, size)] = count_params(nnx.eval_shape(lambda cfg=cfg: Decoder(cfg, rngs=nnx.Rngs(0))))
    assert counts == {
        ("wave_gpt", "nano"): 33_355,
        ("wave_gpt", "small"): 15_470_905,  # the seed size: d 384, 8 layers, 8 heads, 48 waves, vocab 1024
        ("classic", "nano"): 30_592,
        ("classic", "small"): 15_081_216,
    }
    small = preset("wave_gpt")
    assert (small.n_embd, small.n_layer, small.n_head, small.wave.n_waves, small.wave.n_harmonics,
            small.vocab_size, small.block_size) == (384, 8, 8, 48, 4, 1024, 256)


def test_torch_and_jax_models_have_the_same_parameter_names():
    cfg = preset("wave_gpt", "nano", wave_attention="physics")
    jm = build_model(cfg)
    names = set(jax_to_torch(jm))
    assert names == set(TDecoder(cfg).state_dict())


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(wave_kernel="relu"), "wave.kernel='relu' is not known; valid choices: elu1, sigmoid, exp, linear, identity"),
        (dict(wave_mode="cubic"), "wave.mode='cubic' is not known; valid choices: quadratic, linear"),
        (dict(wave_attention="dot"), "wave.attention='dot' is not known; valid choices: interference, physics, pure"),
        (dict(wave_activation="tanh"), "wave.activation='tanh' is not known; valid choices: sin, gelu_sin"),
        (dict(n_embd=30, n_head=4), "n_embd=30 must be divisible by n_head=4"),
        (dict(n_waves=0), "wave.n_waves=0 must be a positive integer"),
        (dict(n_harmonics=2.5), "wave.n_harmonics=2.5 must be an integer"),
        (dict(wave_chunk_size=0), "wave.chunk_size=0 must be a positive integer"),
        (dict(wave_embed_ratio=1.5), "wave.embed_ratio=1.5 must be in [0, 1]"),
        (dict(tie_embeddings=True, head="linear"), "embedding='wave' has none to tie"),
        (dict(mixer="waves"), "mixer='waves' is not a known mixer; valid choices:"),
    ],
)
def test_bad_wave_config_names_field_value_and_choices(fields, message):
    with pytest.raises(ValueError) as err:
        preset("wave_gpt", "nano", **fields)
    assert message in str(err.value)


def test_seed_ablations_resolve_to_valid_configs():
    from physnets_jax.training.wave_ablations import ablation_names, make_ablation

    assert set(ablation_names()) >= {"full_physics", "rgd_only", "qfe_only", "baseline", "pure_wave",
                                     "pure_wave_linear", "pure_wave_sigmoid", "pure_wave_exp"}
    for name in ablation_names():
        a = make_ablation(name)
        preset(a["preset"], "nano", **a["overrides"])
        assert a["optimizer"] in ("rgd", "adamw") and a["loss"] in ("qfe", "ce")
    assert make_ablation("pure_wave_linear")["overrides"]["wave.mode"] == "linear"
    with pytest.raises(ValueError, match="unknown ablation 'pure'; valid choices: classic, baseline"):
        make_ablation("pure")


def test_interference_attention_with_dropout_draws_the_layers_mask(x64):
    """Training mode: the hand-written attention path drops the same weights as the plain
    softmax(q.k / temperature) with the layer's own Dropout (a clone of it, same stream)."""
    from einops import rearrange

    from physnets_jax.layers.wave import _l2_normalize
    from physnets_jax.ops.attention import causal_attention

    mixer = jl.MIXERS["wave"](_cfg("interference", "elu1", "quadratic", dropout=0.3), 0, rngs=nnx.Rngs(1))
    cast_params(mixer, jnp.float64)
    mixer.temperature[...] = jnp.asarray([1.7])
    twin = nnx.clone(mixer)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 7, 16)))
    got = mixer(x)

    def heads(y):
        return rearrange(y, "b t (h w) -> b h t w", h=2)

    q = _l2_normalize(heads(twin.q_proj(x)) + twin.q_phase[...]) / 1.7
    k = _l2_normalize(heads(twin.k_proj(x)) + twin.k_phase[...])
    out = causal_attention(q * 2.0, k, heads(twin.v_proj(x)), weights_dropout=twin.attn_drop)  # W=4: 1/sqrt(W) undone
    want = twin.o_proj(rearrange(out, "b h t d -> b t (h d)"))
    np.testing.assert_allclose(got, want, atol=1e-12)
    mixer.eval()
    assert not np.allclose(got, mixer(x))  # something was dropped
