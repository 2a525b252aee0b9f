"""Wave-Native GPT layers: seed-formula fidelity (numpy references), causality, caches, the exp
kernel's overflow guard, presets and bad input, in both backends."""

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


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize("variant, kernel, mode", VARIANTS, ids=IDS)
def test_mixer_is_causal(variant, kernel, mode, backend):
    """Changing the input at position t changes no output before t (exactly)."""
    cfg = _cfg(variant, kernel, mode)
    x = np.random.default_rng(2).standard_normal((1, 8, 16)).astype(np.float32)
    x2 = x.copy()
    t = 5
    x2[:, t] += 3.0
    if backend == "jax":
        m = jl.MIXERS["wave"](cfg, 0, rngs=nnx.Rngs(0))
        y, y2 = (np.asarray(m(jnp.asarray(a))) for a in (x, x2))
    else:
        m = tl.MIXERS["wave"](cfg, 0).eval()
        with torch.no_grad():
            y, y2 = (m(torch.from_numpy(a)).numpy() for a in (x, x2))
    np.testing.assert_array_equal(y[:, :t], y2[:, :t])
    assert np.abs(y[:, t:] - y2[:, t:]).max() > 0


@pytest.mark.parametrize("variant, kernel, mode", [VARIANTS[i] for i in (0, 1, 2, 4, 6, 9)])
def test_cached_decoding_matches_full_forward(variant, kernel, mode):
    """Prefix + one-token steps through the cache reproduce the full forward (JAX and torch)."""
    cfg = preset("wave_gpt", "nano", wave_attention=variant, wave_kernel=kernel, wave_mode=mode,
                 wave_chunk_size=4, dropout=0.0, n_layer=1)
    tokens = np.random.default_rng(3).integers(0, cfg.vocab_size, (2, 9))
    jm = Decoder(cfg, rngs=nnx.Rngs(0))
    tm = TDecoder(cfg).eval()
    load_jax_into_torch(jm, tm)
    full = np.asarray(jm(jnp.asarray(tokens)))
    cache, tcache, outs, touts = jm.init_cache(2, 9), tm.init_cache(2, 9), [], []
    with torch.no_grad():
        for lo, hi in [(0, 5)] + [(i, i + 1) for i in range(5, 9)]:
            logits, cache = jm(jnp.asarray(tokens[:, lo:hi]), cache=cache)
            tlogits, tcache = tm(torch.from_numpy(tokens[:, lo:hi]), cache=tcache)
            outs.append(np.asarray(logits))
            touts.append(tlogits.numpy())
    np.testing.assert_allclose(np.concatenate(outs, 1), full, atol=2e-5)
    np.testing.assert_allclose(np.concatenate(touts, 1), full, atol=2e-5)


def test_model_is_causal_in_tokens():
    cfg = preset("wave_gpt", "nano", wave_attention="pure", wave_mode="linear", wave_chunk_size=4)
    m = build_model(cfg)
    m.eval()
    tokens = np.random.default_rng(4).integers(0, cfg.vocab_size, (1, 10))
    changed = tokens.copy()
    changed[0, 6] = (changed[0, 6] + 1) % cfg.vocab_size
    a, b = np.asarray(m(jnp.asarray(tokens))), np.asarray(m(jnp.asarray(changed)))
    np.testing.assert_array_equal(a[:, :6], b[:, :6])


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


@pytest.mark.parametrize("mode", ["quadratic", "linear"])
def test_exp_kernel_never_overflows(mode):
    """Huge inputs and a huge learned interference scale: outputs and gradients stay finite."""
    cfg = _cfg("pure", "exp", mode)
    m = jl.MIXERS["wave"](cfg, 0, rngs=nnx.Rngs(0))
    if mode == "quadratic":  # linear mode has no interference_scale (the features bound exp)
        m.interference_scale[...] = jnp.full((2, 1, 1), 1e4)
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
