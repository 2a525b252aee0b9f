"""Bad input gets a ValueError that names the field or shape and the rule, in both backends."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_core.config import preset
from physnets_jax.model import build_model as jbuild
from physnets_torch.convert import jax_to_torch, load_state, torch_to_jax
from physnets_torch.model import build_model as tbuild


@pytest.fixture(scope="module")
def models():
    return {
        "jax": jbuild("ripplegpt", size="nano"),
        "torch": tbuild("ripplegpt", size="nano"),
        "jax_gpt": jbuild("gpt", size="nano"),
        "torch_gpt": tbuild("gpt", size="nano"),
    }


def _run(models, backend, tokens, gpt=False):
    key = backend + ("_gpt" if gpt else "")
    if backend == "jax":
        return models[key](jnp.asarray(tokens))
    return models[key](torch.as_tensor(tokens))


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize(
    "tokens, message",
    [
        (np.array([[0, 65]]), r"token ids must be in \[0, vocab_size=65\), got min 0 and max 65"),
        (np.array([[-1, 3]]), r"token ids must be in \[0, vocab_size=65\), got min -1"),
        (np.zeros((2, 3), np.float32), "tokens must be an integer"),
        (np.zeros((3,), np.int32), r"tokens must have shape \(batch, seq\), got shape \(3,\)"),
        (np.zeros((1, 2, 3), np.int32), r"got shape \(1, 2, 3\)"),
        (np.zeros((2, 0), np.int32), "at least one position"),
    ],
)
def test_bad_tokens(models, backend, tokens, message):
    with pytest.raises(ValueError, match=message):
        _run(models, backend, tokens)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gpt_refuses_sequences_beyond_block_size(models, backend):
    with pytest.raises(ValueError, match="sequence of 33 positions exceeds block_size=32"):
        _run(models, backend, np.zeros((1, 33), np.int32), gpt=True)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_ripplegpt_accepts_sequences_beyond_block_size(models, backend):
    out = _run(models, backend, np.zeros((1, 70), np.int32))
    assert tuple(out.shape) == (1, 70, 65)


def test_state_dict_from_another_config_lists_problems():
    small = tbuild("ripplegpt", size="nano")
    other = tbuild("ripplegpt", size="nano", n_layer=3, vocab_size=70)
    with pytest.raises(ValueError) as err:
        load_state(small, other.state_dict())
    text = str(err.value)
    assert "unexpected keys" in text and "blocks.2.mixer.query.weight" in text
    assert "shape mismatches" in text and "embedding.wte.weight: expected (65, 32), got (70, 32)" in text
    before = {k: v.clone() for k, v in small.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())  # nothing loaded


def test_jax_state_from_another_config_lists_problems():
    from physnets_jax.state import load_flat_params

    jm = jbuild("ripplegpt", size="nano")
    other = jbuild("gpt", size="nano")
    with pytest.raises(ValueError) as err:
        torch_to_jax(jax_to_torch(other), jm)
    assert "missing keys" in str(err.value) and "embedding.wpe.weight" in str(err.value)
    from physnets_jax.state import flat_params

    flat = flat_params(jbuild("ripplegpt", size="nano", n_embd=64))
    with pytest.raises(ValueError, match=r"shape mismatches .*embedding.wte.embedding: expected \(65, 32\), got \(65, 64\)"):
        load_flat_params(jm, flat)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_unknown_preset_in_build(backend):
    build = jbuild if backend == "jax" else tbuild
    with pytest.raises(ValueError, match="unknown preset 'ripple'; valid presets: .*ripplegpt"):
        build("ripple")


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_bad_config_in_build(backend):
    build = jbuild if backend == "jax" else tbuild
    with pytest.raises(ValueError, match="n_embd=30 must be divisible by n_head=4"):
        build(preset("gpt", "nano"), n_embd=30, n_head=4)
