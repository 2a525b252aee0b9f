"""GateLoop layers and presets in both backends, against NumPy loop references.

The references below recompute each layer from its weights with an explicit loop over positions
and an explicit (dk x dv) complex state per head (no scans), following docs/gateloop.md.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from physnets_core.config import ModelConfig, preset
from physnets_jax.generate import generate as jgenerate
from physnets_jax.layers import gateloop as jgl
from physnets_jax.model import build_model, cast_params, count_params
from physnets_jax.state import flat_params
from physnets_torch import model as tmodel
from physnets_torch.convert import load_jax_into_torch
from physnets_torch.generate import generate as tgenerate
from physnets_torch.layers import gateloop as tgl

D = 8


def _cfg(**kw):
    base = dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=D, embedding="token",
                tie_embeddings=False, norm="rmsnorm", init_std=0.3)
    return ModelConfig.from_dict({**base, **kw})


def _x(B=2, T=6, seed=0):
    return np.random.default_rng(seed).normal(size=(B, T, D))


def _layer_norm(x, scale, bias, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def _silu(x):
    return x / (1 + np.exp(-x))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference_gateloop_attention(p, x, cfg, h0=None):
    """NumPy GateLoopedAttention: (B, T, D) -> (B, T, D), loop over t with a (H, dk, dv) state."""
    dim_inner = cfg.gateloop.dim_inner or cfg.n_embd
    H = cfg.gateloop.heads or dim_inner
    d = dim_inner // H
    B, T, _ = x.shape
    qkv = x @ p["to_qkv.kernel"]
    q, k, v = (qkv[..., i * dim_inner:(i + 1) * dim_inner].reshape(B, T, H, d) for i in range(3))
    z = (x @ p["to_a.kernel"] + p["to_a.bias"]).reshape(B, T, H, 2)
    zc = z[..., 0] + 1j * z[..., 1]
    if cfg.gateloop.ablate_state_transition:
        a = np.ones(zc.shape, complex)
    elif cfg.gateloop.ablate_complex:
        re = z[..., 0] + 0j
        a = _sigmoid(np.abs(re)) * np.exp(1j * np.angle(re))
    else:
        a = _sigmoid(np.abs(zc)) * np.exp(1j * np.angle(zc))
    S = np.zeros((B, H, d, d), complex) if h0 is None else h0.astype(complex)
    out = np.zeros((B, T, H, d))
    for t in range(T):
        S = a[:, t, :, None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out[:, t] = np.einsum("bhd,bhde->bhe", q[:, t], S.real)
    out = out.reshape(B, T, dim_inner)
    if cfg.gateloop.sub_ln:
        out = _layer_norm(out, p["sub_ln.scale"], p["sub_ln.bias"])
    if cfg.gateloop.swish_gating:
        out = _silu(x @ p["to_gates.kernel"]) * out
    if cfg.gateloop.swish_gating or dim_inner != cfg.n_embd:
        out = out @ p["to_out.kernel"]
    return out, S


def reference_simple_gateloop(p, x, post_ln=False, reverse=False, prenorm=True):
    """NumPy SimpleGateLoopLayer: RMSNorm (prenorm), per-channel real recurrence, out = q * h."""
    if reverse:
        x = x[:, ::-1]
    dim = x.shape[-1]
    norm = np.maximum(np.sqrt((x**2).sum(-1, keepdims=True)), 1e-12)
    xn = x / norm * np.sqrt(dim) * p["norm.gamma"] if prenorm else x
    q, kv, a = np.split(xn @ p["to_qkva.kernel"], 3, axis=-1)
    h = np.zeros_like(kv[:, 0])
    out = np.zeros_like(kv)
    for t in range(x.shape[1]):
        h = _sigmoid(a[:, t]) * h + kv[:, t]
        out[:, t] = q[:, t] * h
    if post_ln:
        out = _layer_norm(out, p["post_ln.scale"], p["post_ln.bias"])
    return out[:, ::-1] if reverse else out


def _pair(cls_name, cfg, **kw):
    jm = getattr(jgl, cls_name)(cfg, 0, rngs=nnx.Rngs(1), **kw)
    tm = getattr(tgl, cls_name)(cfg, 0, **kw)
    cast_params(jm, jnp.float64)
    tm.double()
    load_jax_into_torch(jm, tm)
    return jm, tm


GATELOOP_OPTIONS = {
    "max_heads": {},
    "heads2_sub_ln": dict(gateloop_heads=2, gateloop_sub_ln=True),
    "dim_inner12_heads3": dict(gateloop_dim_inner=12, gateloop_heads=3),
    "ablate_complex": dict(gateloop_ablate_complex=True),
    "ablate_state_transition": dict(gateloop_ablate_state_transition=True),
    "no_swish_gating": dict(gateloop_swish_gating=False),
    "no_swish_gating_dim_inner12": dict(gateloop_swish_gating=False, gateloop_dim_inner=12, gateloop_heads=3),
    "heinsen": dict(gateloop_heads=2, gateloop_scan="heinsen"),
    "chunked_matmul_heads2": dict(gateloop_heads=2, gateloop_scan="chunked_matmul", gateloop_chunk_size=4),
    "chunked_matmul_max_heads": dict(gateloop_scan="chunked_matmul", gateloop_chunk_size=4),
    "chunked_matmul_ablate_complex": dict(gateloop_heads=2, gateloop_ablate_complex=True,
                                          gateloop_scan="chunked_matmul", gateloop_chunk_size=4),
}


@pytest.mark.parametrize("opts", GATELOOP_OPTIONS.values(), ids=GATELOOP_OPTIONS.keys())
def test_gateloop_attention_matches_reference(x64, opts):
    """GateLoopedAttention (both backends) equals the NumPy loop, options included."""
    cfg = _cfg(**opts)
    jm, tm = _pair("GateLoopedAttention", cfg)
    x = _x()
    expected, _ = reference_gateloop_attention(flat_params(jm), x, cfg)
    np.testing.assert_allclose(np.asarray(jm(jnp.asarray(x))), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tm(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


SIMPLE_OPTIONS = {
    "plain": ({}, {}),
    "post_ln": ({}, dict(post_ln=True)),
    "reverse": ({}, dict(reverse=True)),
    "no_prenorm": (dict(gateloop_prenorm=False), {}),
    "heinsen": (dict(gateloop_scan="heinsen"), {}),
    "chunked_matmul": (dict(gateloop_scan="chunked_matmul", gateloop_chunk_size=4), {}),
}


@pytest.mark.parametrize("name", SIMPLE_OPTIONS)
def test_simple_gateloop_matches_reference(x64, name):
    """SimpleGateLoopLayer (both backends) equals the NumPy loop: post_ln, reverse, no prenorm,
    and the heinsen / chunked_matmul scans."""
    cfg_opts, kw = SIMPLE_OPTIONS[name]
    cfg = _cfg(**cfg_opts)
    jm, tm = _pair("SimpleGateLoopLayer", cfg, **kw)
    assert ("norm.gamma" in flat_params(jm)) == cfg.gateloop.prenorm
    x = _x()
    expected = reference_simple_gateloop(flat_params(jm), x, kw.get("post_ln", False), kw.get("reverse", False),
                                         cfg.gateloop.prenorm)
    np.testing.assert_allclose(np.asarray(jm(jnp.asarray(x))), expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(tm(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-10, atol=1e-10)


def test_attention_cache_state_matches_reference(x64):
    """The returned state is the scanned state S_T (not the last input), in both backends."""
    cfg = _cfg(gateloop_heads=2)
    jm, tm = _pair("GateLoopedAttention", cfg)
    x = _x(T=5)
    _, S = reference_gateloop_attention(flat_params(jm), x, cfg)
    _, jc = jm(jnp.asarray(x), cache=jm.init_cache(2, 5, jnp.float64))
    _, tc = tm(torch.from_numpy(x), cache=tm.init_cache(2, 5, torch.float64))
    for c in (jc, {k: v.detach().numpy() for k, v in tc.items()}):
        np.testing.assert_allclose(np.asarray(c["h_re"]) + 1j * np.asarray(c["h_im"]), S, atol=1e-12)


def test_simple_cache_reverse_and_batch_errors():
    """cache with reverse=True, or a cache made for another batch size: ValueError saying why."""
    cfg = _cfg()
    jm = jgl.SimpleGateLoopLayer(cfg, rngs=nnx.Rngs(0), reverse=True)
    tm = tgl.SimpleGateLoopLayer(cfg, reverse=True)
    x = _x()
    with pytest.raises(ValueError, match="reverse=True.*tokens that have not arrived"):
        jm(jnp.asarray(x, jnp.float32), cache=jm.init_cache(2, 6, jnp.float32))
    with pytest.raises(ValueError, match="reverse=True.*tokens that have not arrived"):
        tm(torch.tensor(x, dtype=torch.float32), cache=tm.init_cache(2, 6, torch.float32))
    for cls_name in ("SimpleGateLoopLayer", "GateLoopedAttention"):
        jm = getattr(jgl, cls_name)(cfg, rngs=nnx.Rngs(0))
        tm = getattr(tgl, cls_name)(cfg)
        with pytest.raises(ValueError, match=r"another batch size.*\(3, .*input has batch 2"):
            jm(jnp.asarray(x, jnp.float32), cache=jm.init_cache(3, 6, jnp.float32))
        with pytest.raises(ValueError, match=r"another batch size.*\(3, .*input has batch 2"):
            tm(torch.tensor(x, dtype=torch.float32), cache=tm.init_cache(3, 6, torch.float32))


def test_transition_gradient_scaled_by_frac_value_unchanged(x64):
    """z*0.9 + stop_gradient(z)*0.1: same output as frac 1, to_a gradients exactly 0.9 x."""
    x = jnp.asarray(_x())
    jm9 = jgl.GateLoopedAttention(_cfg(), rngs=nnx.Rngs(0))
    jm1 = jgl.GateLoopedAttention(_cfg(gateloop_frac_gradient=1.0), rngs=nnx.Rngs(0))
    for m in (jm9, jm1):
        cast_params(m, jnp.float64)
    np.testing.assert_allclose(np.asarray(jm9(x)), np.asarray(jm1(x)), rtol=1e-14, atol=1e-14)
    g9 = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(jm9)
    g1 = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(jm1)
    np.testing.assert_allclose(np.asarray(g9["to_a"]["kernel"][...]), 0.9 * np.asarray(g1["to_a"]["kernel"][...]),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(np.asarray(g9["to_qkv"]["kernel"][...]), np.asarray(g1["to_qkv"]["kernel"][...]),
                               rtol=1e-10, atol=1e-14)
    t9 = tgl.GateLoopedAttention(_cfg()).double()
    t1 = tgl.GateLoopedAttention(_cfg(gateloop_frac_gradient=1.0)).double()
    t1.load_state_dict(t9.state_dict())
    xt = torch.from_numpy(_x())
    for m in (t9, t1):
        m(xt).square().sum().backward()
    torch.testing.assert_close(t9.to_a.weight.grad, 0.9 * t1.to_a.weight.grad, rtol=1e-10, atol=1e-14)


def test_frac_gradient_also_scales_the_input_gradient_through_the_gate(x64):
    """The 0.9 trick acts on z = x W_a + b, so the input gradient through the gate is scaled too:
    grad_x(frac) = g_other + frac g_gate, hence (grad(0.5) - grad(1)) = 5 (grad(0.9) - grad(1)),
    with g_gate != 0 (both backends)."""
    x = _x()
    jgrads, tgrads = {}, {}
    ref_j, ref_t = _pair("GateLoopedAttention", _cfg())
    for frac in (1.0, 0.9, 0.5):
        jm, tm = _pair("GateLoopedAttention", _cfg(gateloop_frac_gradient=frac))
        nnx.update(jm, nnx.state(ref_j))  # same weights for every frac
        tm.load_state_dict(ref_t.state_dict())
        jgrads[frac] = np.asarray(jax.grad(lambda x_, m=jm: jnp.sum(m(x_) ** 2))(jnp.asarray(x)))
        xt = torch.from_numpy(x).requires_grad_()
        tm(xt).square().sum().backward()
        tgrads[frac] = xt.grad.numpy()
    for g in (jgrads, tgrads):
        gate_part = g[1.0] - g[0.9]
        assert np.abs(gate_part).max() > 1e-3
        np.testing.assert_allclose(g[1.0] - g[0.5], 5 * gate_part, rtol=1e-9, atol=1e-12)


def test_checkpointing_same_values_and_gradients(x64):
    """gateloop_checkpoint recomputes the recurrence in the backward: identical results."""
    x = _x()
    jplain, tplain = _pair("GateLoopedAttention", _cfg(gateloop_heads=2))
    jckpt, tckpt = _pair("GateLoopedAttention", _cfg(gateloop_heads=2, gateloop_checkpoint=True))
    nnx.update(jckpt, nnx.state(jplain))
    tckpt.load_state_dict(tplain.state_dict())
    gp = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(x)) ** 2))(jplain)
    gc = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(x)) ** 2))(jckpt)
    for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(gc), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    xt = torch.from_numpy(x).requires_grad_()
    for m in (tplain, tckpt):
        m(xt).square().sum().backward()
    for (n, p), (_, q) in zip(tplain.named_parameters(), tckpt.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-14, msg=n)


def test_bf16_layers_finite():
    """bfloat16 parameters and inputs: finite outputs (the recurrence runs in complex64/float32)."""
    cfg = _cfg()
    x = _x(T=16)
    for cls_name in ("GateLoopedAttention", "SimpleGateLoopLayer"):
        jm = getattr(jgl, cls_name)(cfg, rngs=nnx.Rngs(0))
        cast_params(jm, jnp.bfloat16)
        y = jm(jnp.asarray(x, jnp.bfloat16))
        assert y.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(y.astype(jnp.float32))))
        tm = getattr(tgl, cls_name)(cfg).to(torch.bfloat16)
        y = tm(torch.tensor(x, dtype=torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_hybrid_gateloop_only_in_first_layers():
    """mixer='hybrid': the first gateloop_hybrid_layers blocks carry a SimpleGateLoopLayer."""
    cfg = _cfg(mixer="hybrid", n_layer=3, gateloop_hybrid_layers=2)
    jm = build_model(cfg)
    tm = tmodel.Decoder(cfg)
    assert [b.mixer.gateloop is not None for b in jm.blocks] == [True, True, False]
    assert [b.mixer.gateloop is not None for b in tm.blocks] == [True, True, False]


def test_swish_gating_off_drops_gate_and_identity_projection(x64):
    """gateloop_swish_gating=False (the reference's add_swish_gating=False): no to_gates, and no
    to_out when dim_inner == n_embd (kept otherwise), in both backends; counts by hand at D=8."""
    for opts, has_out, count in (
        ({}, True, 8 * 24 + 8 * 16 + 16 + 8 * 8 + 8 * 8),
        (dict(gateloop_swish_gating=False), False, 8 * 24 + 8 * 16 + 16),
        (dict(gateloop_swish_gating=False, gateloop_dim_inner=12, gateloop_heads=3), True,
         8 * 36 + 8 * 6 + 6 + 12 * 8),
    ):
        jm, tm = _pair("GateLoopedAttention", _cfg(**opts))
        names = set(flat_params(jm))
        assert ("to_gates.kernel" in names) == (opts == {}) and ("to_out.kernel" in names) == has_out, opts
        assert set(tm.state_dict()) == {n.replace("kernel", "weight") for n in names}
        assert count_params(jm) == sum(p.numel() for p in tm.parameters()) == count, opts


def test_preset_parameter_counts():
    """Pinned parameter counts; gateloop-enwik8 is the reference's 23,888,896."""
    expected = {"gateloop-nano": 35_488, "gateloop": 1_004_416, "gateloop-enwik8-nano": 47_808,
                "gateloop-enwik8": 23_888_896}
    for name, count in expected.items():
        abstract = nnx.eval_shape(lambda name=name: build_model(name))
        assert count_params(abstract) == count, name
    with torch.device("meta"):
        assert tmodel.count_params(tmodel.Decoder(preset("gateloop-enwik8"))) == 23_888_896
    cfg = preset("gateloop-enwik8")
    assert (cfg.n_embd, cfg.n_layer, cfg.vocab_size, cfg.prenorm, cfg.norm) == (512, 6, 256, False, "layernorm")
    assert cfg.gateloop.heads is None and (cfg.gateloop.dim_inner or cfg.n_embd) == 512  # 512 heads


def test_config_validation():
    """Bad GateLoop fields raise ValueErrors naming the field, value and rule."""
    with pytest.raises(ValueError, match="gateloop.heads=3 must divide"):
        _cfg(mixer="gateloop", gateloop_heads=3)
    with pytest.raises(ValueError, match="gateloop.frac_gradient=0"):
        _cfg(gateloop_frac_gradient=0.0)
    with pytest.raises(ValueError, match="gateloop.hybrid_layers=-1"):
        _cfg(gateloop_hybrid_layers=-1)
    with pytest.raises(ValueError, match="gateloop.scan='fast'"):
        _cfg(gateloop_scan="fast")


def test_generate_with_cache_matches_no_cache():
    """Greedy generation with the recurrent cache equals re-running the model, both backends."""
    cfg = preset("gateloop", "nano")
    jm = build_model(cfg)
    tm = tmodel.Decoder(cfg)
    load_jax_into_torch(jm, tm)
    prompt = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 5))
    with_cache = np.asarray(jgenerate(jm, prompt, 6, greedy=True, use_cache=True))
    without = np.asarray(jgenerate(jm, prompt, 6, greedy=True, use_cache=False))
    np.testing.assert_array_equal(with_cache, without)
    t_cache = tgenerate(tm, torch.from_numpy(prompt), 6, greedy=True, use_cache=True).numpy()
    np.testing.assert_array_equal(t_cache, with_cache)


def test_state_transition_is_sigmoid_modulus_times_the_phase_of_z(x64):
    # Both backends compute exp(i angle z) as z / |z|; checked against NumPy's angle/exp at random
    # z, on both axes, and at z = 0 (angle 0: a = sigmoid(0) = 1/2), where the gradient is finite.
    # The gradient w.r.t. z equals jax.grad of the textbook form sigmoid(|z|) (cos + i sin)(atan2).
    rng = np.random.default_rng(3)
    z = rng.normal(size=(2, 5, 12)) * 3
    z[0, 0, :6] = [0.0, 0.0, 2.0, 0.0, 0.0, -1.5]  # z = 0, z = 2 (real axis), z = -1.5i
    zc = z[..., 0::2] + 1j * z[..., 1::2]
    expected = 1 / (1 + np.exp(-np.abs(zc))) * np.exp(1j * np.angle(zc))
    kw = dict(ablate_complex=False, ablate_state_transition=False)
    a_jax = np.asarray(jgl.state_transition(jnp.asarray(z), **kw))
    a_torch = tgl.state_transition(torch.from_numpy(z), **kw).numpy()
    assert a_jax[0, 0, 0] == a_torch[0, 0, 0] == 0.5
    np.testing.assert_allclose(a_jax, expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(a_torch, expected, rtol=1e-14, atol=1e-15)

    def textbook(z):
        zc = jax.lax.complex(z[..., 0::2], z[..., 1::2])
        m, phase = jax.nn.sigmoid(jnp.abs(zc)), jnp.angle(zc)
        return jax.lax.complex(m * jnp.cos(phase), m * jnp.sin(phase))

    w = jnp.asarray(rng.normal(size=a_jax.shape) + 1j * rng.normal(size=a_jax.shape))

    def loss(fn, z):
        return jnp.sum((fn(z) * w).real)

    nonzero = jnp.asarray(z).at[0, 0, :2].set(0.3)
    g_new = jax.grad(lambda z: loss(lambda u: jgl.state_transition(u, frac_gradient=1.0, **kw), z))(nonzero)
    np.testing.assert_allclose(g_new, jax.grad(lambda z: loss(textbook, z))(nonzero), rtol=1e-12, atol=1e-14)
    zt = torch.tensor(np.asarray(nonzero), requires_grad=True)
    (tgl.state_transition(zt, frac_gradient=1.0, **kw) * torch.tensor(np.asarray(w))).real.sum().backward()
    np.testing.assert_allclose(zt.grad.numpy(), g_new, rtol=1e-12, atol=1e-14)
    at_zero = jax.grad(lambda z: loss(lambda u: jgl.state_transition(u, **kw), z))(jnp.asarray(z))
    zt = torch.from_numpy(z).requires_grad_()
    (tgl.state_transition(zt, **kw) * torch.tensor(np.asarray(w))).real.sum().backward()
    assert np.isfinite(np.asarray(at_zero)).all() and np.isfinite(zt.grad.numpy()).all()
