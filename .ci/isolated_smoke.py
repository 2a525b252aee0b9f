"""Smoke test of one backend installed alone (run by .ci/isolated_installs, not by .ci/run).

python .ci/isolated_smoke.py torch|jax: imports every module of physnets_core and the backend
(torch: bridge/ excluded, it needs both), checks that the other framework is not installed and was
not imported, then for four presets builds a nano model, takes one AdamW step, exports, reloads
(outputs bitwise equal) and generates.
"""

import importlib
import importlib.util
import pkgutil
import sys
import tempfile

PRESETS = ("ripplegpt", "gateloop", "wave_gpt", "gpt")


def import_everything(backend: str) -> int:
    """Import every module of physnets_core and physnets_<backend>; returns how many."""
    count = 0
    for package in ("physnets_core", f"physnets_{backend}"):
        root = importlib.import_module(package)
        for name in [package] + [m.name for m in pkgutil.walk_packages(root.__path__, package + ".")]:
            if not name.startswith("physnets_torch.bridge"):
                importlib.import_module(name)
                count += 1
    return count


def torch_smoke(out: str) -> None:
    import torch

    from physnets_core import preset
    from physnets_torch.export import load_pretrained, save_pretrained
    from physnets_torch.generate import generate
    from physnets_torch.losses import cross_entropy
    from physnets_torch.model import Decoder

    for name in PRESETS:
        torch.manual_seed(0)
        model = Decoder(preset(name, "nano", dropout=0.0))
        x = torch.randint(0, 65, (2, 16))
        cross_entropy(model(x), x).backward()
        torch.optim.AdamW(model.parameters(), lr=1e-3).step()
        save_pretrained(model, f"{out}/{name}")
        again = load_pretrained(f"{out}/{name}")
        assert torch.equal(again(x), model.eval()(x)), name
        print(name, "ok", tuple(generate(again, x[:1, :4], 4).shape))


def jax_smoke(out: str) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from physnets_core import preset
    from physnets_jax.export import load_pretrained, save_pretrained
    from physnets_jax.generate import generate
    from physnets_jax.losses import cross_entropy
    from physnets_jax.model import build_model

    x = jnp.asarray(np.random.default_rng(0).integers(0, 65, (2, 16)))
    for name in PRESETS:
        model = build_model(preset(name, "nano"), seed=0)
        opt = nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)
        opt.update(model, nnx.grad(lambda m: cross_entropy(m(x), x))(model))
        save_pretrained(model, f"{out}/{name}")
        again = load_pretrained(f"{out}/{name}")
        model.eval()
        np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(model(x)))
        print(name, "ok", generate(again, x[:1, :4], 4, key=jax.random.key(0)).shape)


def main() -> None:
    backend = sys.argv[1]
    if backend not in ("torch", "jax"):
        raise SystemExit(f"usage: isolated_smoke.py torch|jax (got {backend!r})")
    other = "jax" if backend == "torch" else "torch"
    count = import_everything(backend)
    assert importlib.util.find_spec(other) is None, f"{other} is installed in this environment"
    assert other not in sys.modules, f"{other} was imported"
    print(f"imported {count} modules; {other} is not installed")
    out = tempfile.mkdtemp()
    torch_smoke(out) if backend == "torch" else jax_smoke(out)


if __name__ == "__main__":
    main()
