"""Preset wave_gpt-headline: the model of Wave-Native GPT's headline run (spectral_cnn c04e261)
reproduced from copied weights against an independent numpy re-statement of that code
(tests/wave_headline_reference.py), its pinned parameter count, its init, the options it rejects,
and the unprojected QFE loss it was trained with."""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import physnets_torch.layers as tl
from physnets_core.config import preset
from physnets_jax import losses as jlosses
from physnets_jax.layers.wave import blend_embedding_init
from physnets_jax.model import Decoder, count_params
from physnets_jax.state import load_flat_params
from physnets_jax.training.train import TrainConfig, make_loss
from physnets_torch import losses as tlosses
from physnets_torch.convert import jax_to_torch, torch_to_jax
from physnets_torch.model import Decoder as TDecoder
from physnets_torch.model import count_params as tcount_params
from tests import wave_headline_reference as orig
from tests import wave_reference as ref

# small enough for the reference's loops, every part present (2 layers, 2 heads, 3 waves x 2 harmonics)
SMALL = dict(vocab_size=23, n_embd=16, n_head=2, n_layer=2, wave=dict(n_waves=3, n_harmonics=2), dropout=0.0)


def _original_weights(shapes, seed=0):
    """Random weights in the original's state_dict layout, at scales that exercise every term
    (non-trivial LayerNorm gains/shifts, phases, temperatures and blend ratio)."""
    rng = np.random.default_rng(seed)
    sd = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if name == "embedding.harmonic_mults":
            sd[name] = np.arange(1.0, shape[0] + 1.0)
        elif name == "embedding.base_freqs":
            sd[name] = np.linspace(0.5, 5.0, shape[1])[None] + 0.1 * rng.standard_normal(shape)
        elif name == "embedding.phases":
            sd[name] = rng.uniform(0, 2 * math.pi, shape)
        elif name == "embedding.wave_ratio":
            sd[name] = np.asarray(-0.3)
        elif leaf == "temperature":
            sd[name] = rng.uniform(0.5, 3.0, shape)
        elif leaf == "weight" and name.rsplit(".", 2)[-2] in ("ln", "ln1", "ln2"):
            sd[name] = 1.0 + 0.2 * rng.standard_normal(shape)
        elif name == "embedding.harmonic_amps":
            sd[name] = rng.standard_normal(shape)
        else:
            sd[name] = 0.3 * rng.standard_normal(shape)
    return sd


@pytest.fixture(scope="module")
def original():
    cfg = preset("wave_gpt-headline", "nano", **SMALL)
    shapes = orig.original_state_dict_shapes(cfg.vocab_size, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.wave.n_waves,
                                             cfg.wave.n_harmonics)
    sd = _original_weights(shapes)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 7))
    return cfg, sd, tokens, orig.logits(sd, tokens, cfg.n_head)


def _copied_state_dict(model, sd):
    """physnets_torch state_dict of `model` filled from the original's weights by name."""
    names = list(model.state_dict())
    assert {orig.original_name(n) for n in names} == set(sd) - {"embedding.harmonic_mults"}  # same parts, same shapes
    return {n: torch.from_numpy(np.asarray(sd[orig.original_name(n)], np.float64).copy()) for n in names}


def test_torch_reproduces_original_logits_from_copied_weights(original):
    cfg, sd, tokens, want = original
    model = TDecoder(cfg).double().eval()
    model.load_state_dict(_copied_state_dict(model, sd), strict=True)
    with torch.no_grad():
        got = model(torch.from_numpy(tokens)).numpy()
    assert np.abs(want).max() > 1.0  # non-trivial logits
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def jax_model(original):
    """One JAX build of the small config for the module (a new shape costs seconds of compilation)."""
    return Decoder(original[0], rngs=nnx.Rngs(0))


def test_jax_reproduces_original_logits_from_copied_weights(original, jax_model, x64):
    cfg, sd, tokens, want = original
    model = nnx.clone(jax_model)
    load_flat_params(model, torch_to_jax(_copied_state_dict(TDecoder(cfg), sd), model))
    model.eval()
    assert model.embedding.wave_ratio[...].dtype == jnp.float64
    got = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(tokens))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10)


SEED_SIZE_PARAMS = 15_433_657  # benchmark_config.json of the headline run (spectral_cnn 38a89ad)


def test_parameter_count_is_the_headline_runs():
    shapes = orig.original_state_dict_shapes(1024, 384, 8, 8, 48, 4)
    hand = sum(math.prod(s) for n, s in shapes.items() if n != "embedding.harmonic_mults")  # a buffer
    assert hand == SEED_SIZE_PARAMS
    cfg = preset("wave_gpt-headline")
    assert (cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.wave.n_waves, cfg.wave.n_harmonics, cfg.vocab_size, cfg.block_size) == (
        384, 8, 8, 48, 4, 1024, 256)
    assert count_params(nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))) == SEED_SIZE_PARAMS
    with torch.device("meta"):
        assert tcount_params(TDecoder(cfg)) == SEED_SIZE_PARAMS
    nano = preset("wave_gpt-headline", "nano")
    assert count_params(nnx.eval_shape(lambda: Decoder(nano, rngs=nnx.Rngs(0)))) == 32_811


def _check_init_statistics(p, W, H):
    f = p["embedding.base_freqs"]
    np.testing.assert_allclose(f.mean(0), np.linspace(0.5, 5.0, W), atol=0.03)
    assert abs((f - np.linspace(0.5, 5.0, W)).std() - 0.1) < 0.005
    assert abs(p["embedding.harmonic_amps"].std() - 0.5 / math.sqrt(H * W)) < 0.003
    ph = p["embedding.phases"]
    assert 0 <= ph.min() and ph.max() < 2 * math.pi and abs(ph.mean() - math.pi) < 0.05


def _check_init_structure(m, p, cfg):
    W, H = cfg.wave.n_waves, cfg.wave.n_harmonics
    assert m.norm_f is None and m.blocks[0].mlp.kind == "gelu_sin" and m.embedding.variant == "blend"
    assert float(p["embedding.wave_ratio"]) == 0.5 and p["embedding.wave_ratio"].shape == ()
    assert p["embedding.wave_to_embed.weight"].shape == (cfg.n_embd, 2 * W * H)  # no phase/frequency pathways
    assert not p["embedding.wave_to_embed.bias"].any() and not p["head.proj.bias"].any()
    assert p["embedding.pos_freq"].shape == (1, 1, W)
    np.testing.assert_array_equal(p["embedding.ln.weight"], 1.0)
    np.testing.assert_allclose(p["blocks.1.mixer.temperature"], math.sqrt(W), rtol=1e-6)
    assert abs(p["embedding.simple_embed.weight"].std() - 1.0) < 0.15  # N(0, 1): 23 x 16 draws
    linear = np.concatenate([p[f"blocks.{i}.{k}.weight"].ravel() for i in range(2)
                             for k in ("mixer.q_proj", "mixer.o_proj", "mlp.fc1", "mlp.fc2")])
    assert abs(linear.std() - 0.02) < 0.001  # N(0, 0.02), no residual scaling


def test_jax_init_is_the_headline_versions(jax_model, original):
    """Random init (not the physics init): base_freqs = linspace(0.5, 5, W) + 0.1 N(0, 1), harmonic
    amps N(0, 1) 0.5 / sqrt(H W), phases U(0, 2 pi), simple_embed N(0, 1), wave_ratio 0.5, linear
    layers N(0, 0.02) with zero bias; no final norm; gelu(x) + 0.1 sin(x)."""
    _check_init_structure(jax_model, {k: v.numpy() for k, v in jax_to_torch(jax_model).items()}, original[0])
    init = blend_embedding_init(jax.random.key(0), 600, 16, 4)
    _check_init_statistics({f"embedding.{k}": np.asarray(v) for k, v in init.items()}, 16, 4)


def test_torch_init_is_the_headline_versions(original):
    torch.manual_seed(0)
    m = TDecoder(original[0])
    _check_init_structure(m, {k: v.detach().numpy() for k, v in m.state_dict().items()}, original[0])
    m = tl.EMBEDDINGS["wave"](preset("wave_gpt-headline", "nano", vocab_size=600, wave=dict(n_waves=16)))
    _check_init_statistics({f"embedding.{k}": v.detach().numpy() for k, v in m.state_dict().items()}, 16, 4)


@pytest.mark.parametrize(
    "fields, field",
    [
        (dict(wave=dict(attention="pure")), "wave.attention='pure'"),
        (dict(wave=dict(attention="physics")), "wave.attention='physics'"),
        (dict(wave=dict(mode="linear")), "wave.mode='linear'"),
        ({"wave.kernel": "exp"}, "wave.kernel='exp'"),
        (dict(wave_chunk_size=16), "wave.chunk_size=16"),
        (dict(mixer="attention"), "mixer='attention'"),
    ],
)
def test_options_the_headline_version_did_not_have(fields, field):
    with pytest.raises(ValueError) as err:
        preset("wave_gpt-headline", "nano", **fields)
    message = str(err.value)
    assert message.startswith(f"{field} is not available in preset 'wave_gpt-headline'")
    assert "the headline version (spectral_cnn c04e261) has only interference attention" in message
    with pytest.raises(ValueError, match="has only the blend wave embedding, so wave.embedding must be 'blend'"):
        preset("wave_gpt-headline-nano", wave=dict(embedding="physics"))
    with pytest.raises(ValueError, match="wave.embed_ratio=0.5 applies to wave.embedding='physics' only"):
        preset("wave_gpt", "nano", wave=dict(embedding="blend", embed_ratio=0.5))


def test_qfe_unprojected_at_any_vocabulary():
    """projection_dim=None keeps the full one-hot (V = 300 > 256), as the headline run's QFE; the
    trainer's qfe_project=False selects it."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((2, 12, 300))
    targets = rng.integers(0, 300, (2, 12))
    want, _, coherence = ref.qfe(logits, targets, lam=1.0)  # projection=None: one-hot
    projected, _, coherence_projected = ref.qfe(logits, targets, lam=1.0, projection=jlosses.qfe_projection(300))
    assert coherence > 3 * coherence_projected  # 0.0141 unprojected vs 0.0037 projected
    jl, jt = jnp.asarray(logits, jnp.float32), jnp.asarray(targets)
    got_j = float(jax.jit(partial(jlosses.qfe_loss, lambda_coherence=1.0, projection_dim=None))(jl, jt))
    got_t = float(tlosses.qfe_loss(torch.from_numpy(logits), torch.from_numpy(targets), lambda_coherence=1.0,
                                   projection_dim=None))
    assert got_j == pytest.approx(want, rel=1e-5) and got_t == pytest.approx(want, rel=1e-12)
    unprojected = jax.jit(make_loss(TrainConfig(loss="qfe", qfe_lambda=1.0, qfe_project=False)))
    assert float(unprojected(jl, jt)) == pytest.approx(want, rel=1e-5)
    default = jax.jit(make_loss(TrainConfig(loss="qfe", qfe_lambda=1.0)))
    assert float(default(jl, jt)) == pytest.approx(projected, rel=1e-5)
    with pytest.raises(ValueError, match="qfe_project='no' must be True or False"):
        TrainConfig(qfe_project="no")
    from physnets_jax.training.cli import build_train_parser, train_defaults, train_fields

    assert build_train_parser().parse_args(["--no-qfe-projection"]).qfe_project is False
    assert build_train_parser().parse_args([]).qfe_project is None and train_defaults()["qfe_project"] is True
    assert "qfe_project" in train_fields()
