"""RGD (physics_optim.py) and the resonant transform: the seed's formula, convergence, injection."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from physnets_jax.optim import resonant, rgd
from physnets_jax.optim.rgd import resonance_alpha
from physnets_torch.optim import RGD
from tests import wave_reference as ref

SHAPES = {"w": (4, 6), "b": (6,), "t": (3, 2, 5), "s": ()}
HP = dict(lr=0.05, strength=0.5, warmup=3, wd=0.01)


def _problem(steps=6):
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) for k, s in SHAPES.items()} for _ in range(steps)]
    return params, grads


def test_jax_rgd_matches_numpy_formula(x64):
    params, grads = _problem()
    want = ref.rgd_steps(params, grads, lr=HP["lr"], strength=HP["strength"], warmup=HP["warmup"], wd=HP["wd"])
    tx = rgd(HP["lr"], resonance_strength=HP["strength"], warmup_steps=HP["warmup"], weight_decay=HP["wd"])
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = tx.init(p)
    for g in grads:
        updates, state = tx.update({k: jnp.asarray(v) for k, v in g.items()}, state, p)
        p = optax.apply_updates(p, updates)
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(p[k]), want[k], rtol=1e-11, atol=1e-12, err_msg=k)


def test_torch_rgd_matches_numpy_formula():
    params, grads = _problem()
    want = ref.rgd_steps(params, grads, lr=HP["lr"], strength=HP["strength"], warmup=HP["warmup"], wd=HP["wd"])
    tp = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in params.items()}
    opt = RGD(tp.values(), lr=HP["lr"], resonance_strength=HP["strength"], warmup_steps=HP["warmup"],
              weight_decay=HP["wd"])
    for g in grads:
        for k, v in g.items():
            tp[k].grad = torch.from_numpy(v.copy())
        opt.step()
    for k in SHAPES:
        np.testing.assert_allclose(tp[k].detach().numpy(), want[k], rtol=1e-12, atol=1e-14, err_msg=k)
    # the step counter survives a state_dict round trip
    opt2 = RGD(tp.values())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["rgd_step"] == len(grads)


def test_gate_is_identity_without_resonance(x64):
    """strength 0 (or step 0 of the ramp) leaves Adam's update untouched; rank-1 updates too."""
    u = {"w": jnp.asarray(np.random.default_rng(1).standard_normal((3, 4))), "b": jnp.ones(4)}
    out, _ = resonant(resonance_strength=0.0).update(u, resonant().init(u), u)
    np.testing.assert_array_equal(out["w"], u["w"])
    out, _ = resonant(resonance_strength=1.0, warmup_steps=0).update(u, resonant().init(u), u)
    np.testing.assert_array_equal(out["b"], u["b"])
    assert not np.array_equal(out["w"], u["w"])


def test_alpha_ramp():
    assert float(resonance_alpha(1, 0.5, 4)) == pytest.approx(0.125)
    assert float(resonance_alpha(10, 0.5, 4)) == pytest.approx(0.5)
    assert float(resonance_alpha(3, 0.3, 0)) == pytest.approx(0.3)


def _minimise(tx, loss, x0, steps):
    params = {"x": jnp.asarray(x0, jnp.float32)}

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            g = jax.grad(loss)(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), None, length=steps)
        return p

    return run(params)["x"]


def test_converges_on_a_parabola():
    tx = optax.chain(optax.scale_by_adam(), resonant(0.5, 50), optax.scale(-0.05))
    x = _minimise(tx, lambda p: jnp.sum((p["x"] - 3.0) ** 2), np.zeros((4, 4)), 1000)
    np.testing.assert_allclose(np.asarray(x), 3.0, atol=1e-2)


def test_rgd_converges_on_rosenbrock():
    """A (2, 2) stack of Rosenbrock problems (rank 2, so the gate is active)."""

    def rosen(p):
        a, b = p["x"][:, 0], p["x"][:, 1]
        return jnp.sum((1 - a) ** 2 + 100 * (b - a**2) ** 2)

    x = _minimise(rgd(0.02, warmup_steps=100, weight_decay=0.0), rosen, [[-1.2, 1.0], [0.5, -0.5]], 3000)
    np.testing.assert_allclose(np.asarray(x), 1.0, atol=2e-2)


def test_works_under_inject_hyperparams():
    tx = optax.inject_hyperparams(rgd)(learning_rate=0.05, resonance_strength=0.5, warmup_steps=3, weight_decay=0.0)
    x = _minimise(tx, lambda p: jnp.sum((p["x"] - 1.0) ** 2), np.zeros((3, 3)), 600)
    np.testing.assert_allclose(np.asarray(x), 1.0, atol=1e-2)
    state = tx.init({"x": jnp.zeros((3, 3))})
    state.hyperparams["resonance_strength"] = jnp.asarray(0.0)
    u, _ = tx.update({"x": jnp.ones((3, 3))}, state, {"x": jnp.zeros((3, 3))})
    np.testing.assert_allclose(np.asarray(u["x"]), -0.05, rtol=1e-5)  # Adam's first step, ungated


def test_resonant_needs_params():
    tx = resonant()
    with pytest.raises(ValueError, match="resonant needs params"):
        tx.update({"x": jnp.ones((2, 2))}, tx.init(None))
