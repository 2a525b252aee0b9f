"""ModelConfig validation, presets and pinned parameter counts."""

import pytest

from physnets_core.config import ModelConfig, preset, preset_names, preset_sizes


def test_defaults_validate():
    cfg = ModelConfig()
    assert cfg.head_size == cfg.n_embd // cfg.n_head


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(n_embd=100, n_head=6), "n_embd=100 must be divisible by n_head=6"),
        (dict(n_layer=0), "n_layer=0 must be a positive integer"),
        (dict(vocab_size=-3), "vocab_size=-3 must be a positive integer"),
        (dict(block_size=2.5), "block_size=2.5 must be an integer"),
        (dict(n_head=True), "n_head=True must be an integer"),
        (dict(dropout=1.0), "dropout=1.0 must be in [0, 1)"),
        (dict(mixer="lstm"), "mixer='lstm' is not a known mixer; valid choices: attention, ripple"),
        (dict(mlp="tanh"), "mlp='tanh' is not a known mlp"),
        (dict(mlp_hidden=0), "mlp_hidden=0 must be a positive integer"),
        (dict(norm_eps=0.0), "norm_eps=0.0 must be > 0"),
    ],
)
def test_bad_config_names_field_and_rule(fields, message):
    with pytest.raises(ValueError) as err:
        ModelConfig(**fields)
    assert message in str(err.value)


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError) as err:
        preset("gpt5")
    assert "unknown preset 'gpt5'" in str(err.value)
    for name in ("gpt", "ripplegpt"):
        assert name in str(err.value)


def test_unknown_size_lists_valid_sizes():
    with pytest.raises(ValueError, match="unknown size 'huge' for preset 'gpt'; valid sizes: nano"):
        preset("gpt", "huge")


def test_size_suffix_and_overrides():
    assert preset("ripplegpt-nano") == preset("ripplegpt", "nano")
    assert preset("ripplegpt", "nano", vocab_size=80).vocab_size == 80
    assert {"gpt", "ripplegpt"} <= set(preset_names())
    assert {"nano", "small"} <= set(preset_sizes("gpt"))


def test_unknown_fields_from_dict():
    with pytest.raises(ValueError, match="unknown ModelConfig fields: colour"):
        ModelConfig.from_dict({"colour": 1})


def test_json_round_trip_and_diff():
    cfg = preset("ripplegpt", "nano")
    import json

    assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert cfg.diff(cfg.replace(n_layer=3)) == {"n_layer": (2, 3)}


def test_ripplegpt_preset_is_the_reference_config():
    cfg = preset("ripplegpt")
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (65, 256, 6, 6, 384)
    assert (cfg.embedding, cfg.mixer, cfg.mlp, cfg.attn_out_proj, cfg.bias) == ("token", "ripple", "ripple", False, False)
    assert cfg.dropout == 0.2 and cfg.ripple.decay_init == -0.8 and not cfg.tie_embeddings
    assert cfg.mlp_width == 512  # int(384 * 8/3) = 1024 (even), halved by the value/gate split
    assert cfg.extrapolates and not preset("gpt").extrapolates


# Hand counts. ripplegpt (published code, vocab 65): token table 65*384; per layer two LayerNorms
# 4*384, q/k/v 3*384*384, 6 decays, fc1 384*1024+1024, fc2 512*384+384; final LN 768; head 65*384.
RIPPLEGPT_PARAMS = 65 * 384 + 6 * (4 * 384 + 3 * 384 * 384 + 6 + 384 * 1024 + 1024 + 512 * 384 + 384) + 768 + 65 * 384
# gpt (nanoGPT, bias=True, tied head): wte 65*384, wpe 256*384; per layer 2 LNs, qkv 384*1152+1152,
# proj 384*384+384, fc 384*1536+1536, proj 1536*384+384; final LN.
GPT_PARAMS = 65 * 384 + 256 * 384 + 6 * (4 * 384 + 384 * 1152 + 1152 + 384 * 384 + 384 + 384 * 1536 + 1536 + 1536 * 384 + 384) + 768


def test_pinned_counts_are_the_hand_counts():
    assert RIPPLEGPT_PARAMS == 6_261_540  # DESIGN section 6: the published code's figure
    assert GPT_PARAMS == 10_770_816  # nanoGPT prints 10.65M: it leaves out wpe (98,304)


@pytest.mark.parametrize("name, expected", [("ripplegpt", RIPPLEGPT_PARAMS), ("gpt", GPT_PARAMS)])
def test_preset_parameter_counts_both_backends(name, expected):
    from physnets_jax.model import build_model as jbuild
    from physnets_jax.model import count_params as jcount
    from physnets_torch.model import build_model as tbuild
    from physnets_torch.model import count_params as tcount

    assert jcount(jbuild(name)) == expected
    assert tcount(tbuild(name)) == expected
