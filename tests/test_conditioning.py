"""Gradient conditioning: hand-computed rules, convergence (parabola, Rosenbrock), int leaves,
inject_hyperparams, and the torch ConditionedOptimizer wrapper."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from physnets_jax.optim import condition_gradients
from physnets_torch.optim import ConditionedOptimizer

MODES = ["schedule", "learned"]


def parabola(p):
    return jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum((p["b"] + 2.0) ** 2)


def rosenbrock(p):
    x, y = p["xy"][0], p["xy"][1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def optimize(loss, params, tx, steps):
    state = tx.init(params)

    @jax.jit
    def step(p, s):
        u, s = tx.update(jax.grad(loss)(p), s, p)
        return optax.apply_updates(p, u), s

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("inject", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_converges_on_parabola(mode, inject):
    cond = optax.inject_hyperparams(condition_gradients) if inject else condition_gradients
    tx = optax.chain(cond(mode, hyper_lr=0.01), optax.sgd(0.01, momentum=0.9))
    p, _ = optimize(parabola, {"w": jnp.zeros((3, 4)), "b": jnp.zeros(3)}, tx, 400)
    np.testing.assert_allclose(np.asarray(p["w"]), 1.0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(p["b"]), -2.0, atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_converges_on_rosenbrock(mode):
    tx = optax.chain(condition_gradients(mode), optax.sgd(1e-3, momentum=0.9))
    p, _ = optimize(rosenbrock, {"xy": jnp.array([-1.0, 1.5])}, tx, 4000)
    np.testing.assert_allclose(np.asarray(p["xy"]), [1.0, 1.0], atol=5e-3)


def test_schedule_values_by_hand():
    # tensors in order: a (4, 2) size 8, b (2, 8) size 16 [median of rank>=2 sizes 12], c (3,)
    g = {"a": jnp.ones((4, 2)), "b": jnp.arange(16.0).reshape(2, 8), "c": jnp.full(3, 2.0)}
    tx = condition_gradients("schedule", depth_gain=0.5, size_power=0.5, center=0.5,
                             vector_scale=3.0)
    out, state = tx.update(g, tx.init(g))
    sa = 1.5 * math.sqrt(12 / 8)  # depth 0: 1 + 0.5
    sb = 1.25 * math.sqrt(12 / 16)  # depth 0.5
    sc = 1.0 * 3.0  # depth 1, vector
    assert float(state.scale["a"]) == pytest.approx(sa, rel=1e-6)
    assert float(state.scale["b"]) == pytest.approx(sb, rel=1e-6)
    assert float(state.scale["c"]) == pytest.approx(sc, rel=1e-6)
    np.testing.assert_allclose(out["a"], sa * 1.0 - 0.5 * sa * 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["b"], sb * (np.arange(16.0) - 0.5 * 7.5).reshape(2, 8),
                               rtol=1e-6)
    np.testing.assert_allclose(out["c"], sc * 2.0, rtol=1e-6)
    assert float(state.shift["c"]) == 0.0


def test_schedule_clips_and_uses_explicit_depths():
    g = {"a": jnp.ones((2, 2)), "b": jnp.ones(2)}
    tx = condition_gradients("schedule", depths=[1.0, 0.0], depth_gain=100.0, scale_max=4.0)
    _, state = tx.update(g, tx.init(g))
    assert float(state.scale["a"]) == pytest.approx(1.0)  # depth 1: no depth boost, 1 rank-2
    assert float(state.scale["b"]) == 4.0  # 1 + 100 clipped


def test_learned_rule_by_hand():
    tx = condition_gradients("learned", hyper_lr=0.1)
    g1 = {"w": jnp.array([1.0, 0.0])}
    g2 = {"w": jnp.array([1.0, 1.0])}
    s = tx.init(g1)
    out1, s = tx.update(g1, s)  # first step: cos 0 -> scale 1; shift = 0.1 * mean 0.5
    np.testing.assert_allclose(out1["w"], [1.05, 0.05], rtol=1e-6)
    out2, s = tx.update(g2, s)
    cos = 1 / math.sqrt(2)
    scale = 1 + 0.1 * cos
    shift = 0.9 * 0.05 + 0.1 * 1.0
    assert float(s.scale["w"]) == pytest.approx(scale, rel=1e-6)
    assert float(s.shift["w"]) == pytest.approx(shift, rel=1e-6)
    np.testing.assert_allclose(out2["w"], [scale + shift] * 2, rtol=1e-6)
    np.testing.assert_array_equal(s.prev_grad["w"], g2["w"])
    assert int(s.count) == 2


@pytest.mark.parametrize("mode", MODES)
def test_non_float_leaves_untouched(mode):
    params = {"w": jnp.ones(3), "step": jnp.array(7, jnp.int32)}
    grads = jax.grad(lambda p: jnp.sum(p["w"] ** 2), allow_int=True)(params)
    assert grads["step"].dtype == jax.dtypes.float0
    tx = condition_gradients(mode)
    state = tx.init(params)
    for tree in (grads, {"w": jnp.ones(3), "step": jnp.array(5, jnp.int32)}):
        out, state = jax.jit(tx.update)(tree, state)
        assert out["step"].dtype == tree["step"].dtype
        np.testing.assert_array_equal(np.asarray(out["step"]), np.asarray(tree["step"]))


def test_float64_state_dtype(x64):
    p = {"w": jnp.ones((2, 2), jnp.float64)}
    for mode in MODES:
        tx = condition_gradients(mode)
        out, s = tx.update(p, tx.init(p))
        assert out["w"].dtype == s.scale["w"].dtype == s.shift["w"].dtype == jnp.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode='adaptive' is not a known conditioning mode"):
        condition_gradients("adaptive")
    p = {"a": jnp.ones(2), "b": jnp.ones(2)}
    with pytest.raises(ValueError, match="depths has 1 entries but there are 2"):
        condition_gradients(depths=[0.0]).init(p)
    with pytest.raises(ValueError, match=r"depths entries must be in \[0, 1\], got 2.0"):
        condition_gradients(depths=[0.0, 2.0]).init(p)
    with pytest.raises(ValueError, match=r"hyper_lr=1.5 must be in \[0, 1\)"):
        condition_gradients("learned", hyper_lr=1.5).init(p)
    with pytest.raises(ValueError, match="scale_min=2.0 must be <= scale_max=1.0"):
        condition_gradients(scale_min=2.0, scale_max=1.0).init(p)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="mode='adaptive' is not a known"):
        ConditionedOptimizer(opt, "adaptive")
    with pytest.raises(ValueError, match="must be a torch.optim.Optimizer"):
        ConditionedOptimizer([1, 2], "schedule")


# ----------------------------------------------------------------------------------- torch

def torch_optimize(loss_fn, params, mode, lr, steps, **kw):
    opt = ConditionedOptimizer(torch.optim.SGD(params, lr=lr, momentum=0.9), mode, **kw)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    return opt


@pytest.mark.parametrize("mode", MODES)
def test_torch_converges_on_parabola_and_rosenbrock(mode):
    w, b = torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(3))
    torch_optimize(lambda: ((w - 1) ** 2).sum() + ((b + 2) ** 2).sum(), [w, b], mode, 0.01, 400,
                   hyper_lr=0.01)
    np.testing.assert_allclose(w.detach().numpy(), 1.0, atol=1e-3)
    np.testing.assert_allclose(b.detach().numpy(), -2.0, atol=1e-3)
    xy = torch.nn.Parameter(torch.tensor([-1.0, 1.5]))
    torch_optimize(lambda: (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2, [xy], mode,
                   1e-3, 4000)
    np.testing.assert_allclose(xy.detach().numpy(), [1.0, 1.0], atol=5e-3)


def test_torch_state_dict_round_trip_and_closure():
    w = torch.nn.Parameter(torch.ones(2, 2))
    opt = ConditionedOptimizer(torch.optim.SGD([w], lr=0.1, momentum=0.9), "learned")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert float(opt.step(closure).detach()) == 4.0
    opt.step(closure)
    sd = opt.state_dict()
    w2 = torch.nn.Parameter(w.detach().clone())
    opt2 = ConditionedOptimizer(torch.optim.SGD([w2], lr=0.1, momentum=0.9), "learned")
    opt2.load_state_dict(sd)
    assert opt2.count == 2
    torch.testing.assert_close(opt2.state[w2]["prev_grad"], opt.state[w]["prev_grad"])
    with pytest.raises(ValueError, match="state_dict mode='learned' != mode='schedule'"):
        ConditionedOptimizer(torch.optim.SGD([w2], lr=0.1), "schedule").load_state_dict(sd)
