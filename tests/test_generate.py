"""Generation: cached decoding equals re-running the model; limits and sampling rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from physnets_jax.generate import generate as jgenerate
from physnets_jax.generate import sample_logits as jsample
from physnets_jax.model import build_model as jbuild
from physnets_torch.generate import generate as tgenerate
from physnets_torch.generate import sample_logits as tsample
from physnets_torch.model import build_model as tbuild


@pytest.mark.parametrize("name, new", [("gpt", 20), ("ripplegpt", 50)])
def test_jax_greedy_cache_equals_no_cache(name, new):
    model = jbuild(name, size="nano")
    prompt = np.random.default_rng(0).integers(0, 65, (2, 5))
    a = jgenerate(model, prompt, new, greedy=True)
    b = jgenerate(model, prompt, new, greedy=True, use_cache=False)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.shape == (2, 5 + new)


@pytest.mark.parametrize("name, new", [("gpt", 20), ("ripplegpt", 50)])
def test_torch_greedy_cache_equals_no_cache(name, new):
    model = tbuild(name, size="nano")
    prompt = torch.from_numpy(np.random.default_rng(0).integers(0, 65, (2, 5)))
    a = tgenerate(model, prompt, new, greedy=True)
    b = tgenerate(model, prompt, new, greedy=True, use_cache=False)
    assert torch.equal(a, b) and a.shape == (2, 5 + new)


def test_jax_sampled_cache_equals_no_cache_with_the_same_key():
    # The cached path samples inside one lax.scan: it must draw the same token from the same
    # key at each step as the uncached Python loop does.
    model = jbuild("ripplegpt", size="nano")
    prompt = np.random.default_rng(2).integers(0, 65, (3, 4))
    kwargs = dict(key=jax.random.key(7), temperature=0.8, top_k=10)
    a = jgenerate(model, prompt, 24, **kwargs)
    b = jgenerate(model, prompt, 24, use_cache=False, **kwargs)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(np.unique(np.asarray(a)[:, 4:])) > 3  # really sampled, not a constant run


def test_jax_cached_generation_compiles_once_per_shape():
    from physnets_jax.generate import _decode_cached

    model = jbuild("gpt", size="nano")
    prompt = np.zeros((1, 4), np.int64)
    jgenerate(model, prompt, 8, temperature=1.0)
    compiled = _decode_cached._cache_size()
    jgenerate(model, prompt, 8, temperature=0.5, key=jax.random.key(3))  # new temperature and key
    assert _decode_cached._cache_size() == compiled
    jgenerate(model, prompt, 9)  # a new length is a new shape
    assert _decode_cached._cache_size() == compiled + 1


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gpt_refuses_generation_past_block_size(backend):
    prompt = np.zeros((1, 30), np.int64)
    with pytest.raises(ValueError, match=r"prompt \(30\) \+ max_new_tokens \(5\) = 35 exceeds block_size=32"):
        if backend == "jax":
            jgenerate(jbuild("gpt", size="nano"), prompt, 5)
        else:
            tgenerate(tbuild("gpt", size="nano"), torch.from_numpy(prompt), 5)


def test_gpt_crop_slides_the_window():
    model = tbuild("gpt", size="nano")
    out = tgenerate(model, torch.zeros((1, 30), dtype=torch.long), 5, greedy=True, crop=True)
    assert out.shape == (1, 35)
    j = jgenerate(jbuild("gpt", size="nano"), np.zeros((1, 30), np.int64), 5, greedy=True, crop=True)
    assert j.shape == (1, 35)


@pytest.mark.parametrize("backend", ["jax", "torch"])
@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(temperature=0.0), "temperature=0.0 must be > 0"), (dict(top_k=0), "top_k=0 must be a positive integer"),
     (dict(max_new_tokens=-1), "max_new_tokens=-1 must be a non-negative integer")],
)
def test_bad_generation_arguments(backend, kwargs, message):
    kwargs = dict(kwargs)
    n = kwargs.pop("max_new_tokens", 3)
    with pytest.raises(ValueError, match=message):
        if backend == "jax":
            jgenerate(jbuild("ripplegpt", size="nano"), np.zeros((1, 2), np.int64), n, **kwargs)
        else:
            tgenerate(tbuild("ripplegpt", size="nano"), torch.zeros((1, 2), dtype=torch.long), n, **kwargs)


def test_top_k_samples_only_from_the_k_largest():
    logits = np.array([[0.0, 3.0, 1.0, 2.9, -1.0]] * 64)
    allowed = {1, 3}
    j = {int(t) for k in range(8) for t in np.asarray(jsample(jnp.asarray(logits), jax.random.key(k), top_k=2))}
    g = torch.Generator().manual_seed(0)
    t = {int(x) for _ in range(8) for x in tsample(torch.from_numpy(logits), g, top_k=2)}
    assert j == allowed and t == allowed


def test_low_temperature_approaches_greedy_and_high_spreads():
    logits = np.array([[0.0, 1.0, 0.5]] * 2000)
    cold = np.asarray(jsample(jnp.asarray(logits), jax.random.key(0), temperature=0.01))
    hot = np.asarray(jsample(jnp.asarray(logits), jax.random.key(0), temperature=100.0))
    assert (cold == 1).all()
    counts = np.bincount(hot, minlength=3) / hot.size
    assert np.all(np.abs(counts - 1 / 3) < 0.05)
