"""Each backend imports, and works for a user, with the other framework blocked.

A meta-path finder raises ImportError for the blocked top-level packages, in a fresh interpreter,
so an import of the other framework anywhere (module level or a call made by the smoke test) fails
the test. physnets_core must import with both frameworks blocked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

JAX_SIDE = ("jax", "jaxlib", "flax", "optax", "orbax", "chex", "jax2torch")
TORCH_SIDE = ("torch", "torchvision", "jax2torch")

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked for this test: {{name}}")
sys.meta_path.insert(0, Block())
"""

IMPORT_ALL = """
import importlib, pkgutil
failed = []
for package in {packages!r}:
    root = importlib.import_module(package)
    names = [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]
    for name in names:
        if any(name == s or name.startswith(s + ".") for s in {skip!r}):
            continue
        try:
            importlib.import_module(name)
        except Exception as e:
            failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
assert not failed, "modules that need the blocked framework:\\n" + "\\n".join(failed)
print("imported", len(names))
"""


def _run(blocked, body: str) -> str:
    code = BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_core_imports_without_any_framework():
    _run(JAX_SIDE + TORCH_SIDE, IMPORT_ALL.format(packages=("physnets_core",), skip=()))


def test_torch_backend_imports_without_jax():
    """Every physnets_torch module but bridge/ (which needs both by design)."""
    _run(JAX_SIDE, IMPORT_ALL.format(packages=("physnets_torch",), skip=("physnets_torch.bridge",)))


def test_jax_backend_imports_without_torch():
    """Every physnets_jax module, the trainer included."""
    _run(TORCH_SIDE, IMPORT_ALL.format(packages=("physnets_jax",), skip=()))


def test_torch_user_smoke_without_jax(tmp_path):
    """A torch-only user: build a preset, train one step, export, reload, generate."""
    _run(JAX_SIDE, f"""
        import torch
        from physnets_core import preset
        from physnets_torch.export import load_pretrained, save_pretrained
        from physnets_torch.generate import generate
        from physnets_torch.losses import cross_entropy
        from physnets_torch.model import Decoder
        torch.manual_seed(0)
        model = Decoder(preset("ripplegpt", "nano", dropout=0.0))
        x = torch.randint(0, 65, (2, 16))
        loss = cross_entropy(model(x), x)
        loss.backward()
        torch.optim.AdamW(model.parameters(), lr=1e-3).step()
        save_pretrained(model, {str(tmp_path / "export")!r})
        again = load_pretrained({str(tmp_path / "export")!r})
        assert torch.equal(again(x), model.eval()(x))
        print(generate(again, x[:1, :4], 4).shape)
    """)


@pytest.mark.parametrize("preset_name", ["gateloop"])
def test_jax_user_smoke_without_torch(tmp_path, preset_name):
    """A JAX-only user: build a preset, take a training step, export, reload, generate."""
    _run(TORCH_SIDE, f"""
        import jax, jax.numpy as jnp, numpy as np, optax
        from flax import nnx
        from physnets_core import preset
        from physnets_jax.export import load_pretrained, save_pretrained
        from physnets_jax.generate import generate
        from physnets_jax.losses import cross_entropy
        from physnets_jax.model import build_model
        model = build_model(preset({preset_name!r}, "nano"), seed=0)
        x = jnp.asarray(np.random.default_rng(0).integers(0, 65, (2, 16)))
        opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)

        @nnx.jit  # one compilation for the step (eager JAX compiles every primitive: twice the time)
        def step(model, opt, x):
            opt.update(model, nnx.grad(lambda m: cross_entropy(m(x), x))(model))

        step(model, opt, x)
        save_pretrained(model, {str(tmp_path / "export")!r})
        again = load_pretrained({str(tmp_path / "export")!r})
        model.eval()
        np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
        print(generate(again, x[:1, :4], 4, key=jax.random.key(0)).shape)
    """)
