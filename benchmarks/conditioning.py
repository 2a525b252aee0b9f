"""Gradient conditioning vs plain SGD: the lof310 protocol (SGD momentum 0.9, lr 0.01, batch 32,
10 epochs, a CNN and an MLP, 3 seeds, test accuracy mean +- std) on scikit-learn's bundled
digits (8x8 grey images, 1437 train / 360 test, stratified split fixed across seeds), or on
CIFAR-10 when a local copy in the binary format (cifar-10-batches-bin) is given.

    python benchmarks/conditioning.py                     # digits, 3 seeds, 10 epochs
    python benchmarks/conditioning.py --quick             # 1 seed, 2 epochs, CNN only
    python benchmarks/conditioning.py --cifar10 DIR       # DIR holds data_batch_1.bin ... test_batch.bin

Written in JAX (optax.chain(condition_gradients(mode), optax.sgd(0.01, momentum=0.9))).
Needs scikit-learn for the digits set (pip install scikit-learn).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks.timing import machine_line, markdown_table  # noqa: E402
from physnets_jax.optim import condition_gradients  # noqa: E402

VARIANTS = ("baseline", "schedule", "learned", "learned-1e-2")


# ----------------------------------------------------------------------------------- data

def load_digits_split(seed: int = 0):
    """Digits as (N, 8, 8, 1) float32 standardised images + int labels; 80/20 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=seed,
                                          stratify=d.target)
    mean, std = xtr.mean(), xtr.std()
    return (xtr - mean) / std, ytr.astype(np.int32), (xte - mean) / std, yte.astype(np.int32)


def load_cifar10_bin(root: str):
    """CIFAR-10 binary format (3073-byte records) -> (N, 32, 32, 3) standardised, labels."""
    root = pathlib.Path(root)

    def read(names):
        raw = np.concatenate([np.fromfile(root / n, np.uint8) for n in names]).reshape(-1, 3073)
        x = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
        return x, raw[:, 0].astype(np.int32)

    xtr, ytr = read([f"data_batch_{i}.bin" for i in range(1, 6)])
    xte, yte = read(["test_batch.bin"])
    mean, std = xtr.mean((0, 1, 2)), xtr.std((0, 1, 2))
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte


# --------------------------------------------------------------------------------- models

def he(key, shape, fan_in):
    return jax.random.normal(key, shape) * np.sqrt(2.0 / fan_in)


def init_cnn(key, hw: int, channels: int, classes: int = 10):
    """conv32-conv64-pool-conv128-pool-dense128-dense10 (3x3 convs, ReLU); ~1.1M params at 32x32."""
    ks = jax.random.split(key, 5)
    widths = [(channels, 32), (32, 64), (64, 128)]
    p = {}
    for i, (cin, cout) in enumerate(widths):
        p[f"l{i}_w"] = he(ks[i], (3, 3, cin, cout), 9 * cin)
        p[f"l{i}_b"] = jnp.zeros(cout)
    flat = (hw // 4) ** 2 * 128
    p["l3_w"] = he(ks[3], (flat, 128), flat)
    p["l3_b"] = jnp.zeros(128)
    p["l4_w"] = he(ks[4], (128, classes), 128)
    p["l4_b"] = jnp.zeros(classes)
    return p


def cnn(p, x):
    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + b)

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    x = conv(x, p["l0_w"], p["l0_b"])
    x = pool(conv(x, p["l1_w"], p["l1_b"]))
    x = pool(conv(x, p["l2_w"], p["l2_b"]))
    x = jax.nn.relu(x.reshape(x.shape[0], -1) @ p["l3_w"] + p["l3_b"])
    return x @ p["l4_w"] + p["l4_b"]


def init_mlp(key, hw: int, channels: int, classes: int = 10):
    """in-256-128-10 MLP with ReLU."""
    dims = [hw * hw * channels, 256, 128, classes]
    ks = jax.random.split(key, 3)
    p = {}
    for i in range(3):
        p[f"l{i}_w"] = he(ks[i], (dims[i], dims[i + 1]), dims[i])
        p[f"l{i}_b"] = jnp.zeros(dims[i + 1])
    return p


def mlp(p, x):
    x = x.reshape(x.shape[0], -1)
    for i in range(2):
        x = jax.nn.relu(x @ p[f"l{i}_w"] + p[f"l{i}_b"])
    return x @ p["l2_w"] + p["l2_b"]


MODELS = {"cnn": (init_cnn, cnn), "mlp": (init_mlp, mlp)}


# ------------------------------------------------------------------------------- training

def make_tx(variant: str, lr: float):
    sgd = optax.sgd(lr, momentum=0.9)
    if variant == "baseline":
        return sgd
    if variant == "learned-1e-2":  # learned mode with a 10x larger hyper learning rate
        return optax.chain(condition_gradients("learned", hyper_lr=1e-2), sgd)
    return optax.chain(condition_gradients(variant), sgd)


def run(model: str, variant: str, seed: int, data, epochs: int, lr: float, batch: int):
    """Train one model; returns (test accuracy %, final train loss, seconds)."""
    xtr, ytr, xte, yte = data
    init, apply = MODELS[model]
    params = init(jax.random.PRNGKey(seed), xtr.shape[1], xtr.shape[-1])
    tx = make_tx(variant, lr)
    state = tx.init(params)

    def loss_fn(p, x, y):
        logits = apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    predict = jax.jit(lambda p, x: jnp.argmax(apply(p, x), -1))
    rng = np.random.default_rng(seed)
    n = len(xtr) // batch * batch
    start = time.perf_counter()
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(xtr))[:n].reshape(-1, batch)
        for idx in order:
            params, state, loss = step(params, state, xtr[idx], ytr[idx])
            losses.append(loss)
    correct = sum(int((predict(params, xte[i:i + 1000]) == yte[i:i + 1000]).sum())
                  for i in range(0, len(xte), 1000))
    final_loss = float(np.mean(np.asarray(losses[-(n // batch):])))  # mean over last epoch
    return 100.0 * correct / len(xte), final_loss, time.perf_counter() - start


def main() -> None:
    """Print one markdown table: test accuracy (mean +- std over seeds) per model and variant."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, CNN only")
    parser.add_argument("--cifar10", default=None, help="directory of cifar-10-batches-bin")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    seeds, epochs, models = args.seeds, args.epochs, list(MODELS)
    if args.quick:
        seeds, epochs, models = 1, 2, ["cnn"]
    data = load_cifar10_bin(args.cifar10) if args.cifar10 else load_digits_split()
    name = "CIFAR-10" if args.cifar10 else "digits (sklearn)"
    rows = []
    for model in models:
        nparams = sum(int(np.prod(v.shape)) for v in
                      jax.tree.leaves(MODELS[model][0](jax.random.PRNGKey(0), data[0].shape[1],
                                                       data[0].shape[-1])))
        base = None
        for variant in VARIANTS:
            res = np.array([run(model, variant, s, data, epochs, args.lr, args.batch)
                            for s in range(seeds)])
            acc = res[:, 0]
            if variant == "baseline":
                base = acc
            delta = acc - base
            rows.append([
                model, f"{nparams:,}", variant,
                f"{acc.mean():.2f} ± {acc.std():.2f}",
                f"{delta.mean():+.2f} ± {delta.std():.2f}" if variant != "baseline" else "—",
                f"{res[:, 1].mean():.4f}",
                f"{res[:, 2].mean():.1f}",
            ])
            print(f"  {model} {variant}: acc {acc}", file=sys.stderr, flush=True)
    print(f"Data: {name}; SGD momentum 0.9, lr {args.lr}, batch {args.batch}, {epochs} epochs, "
          f"seeds 0..{seeds - 1} (std over seeds, population).")
    print(f"Machine: {machine_line()}\n")
    print(markdown_table(
        ["model", "params", "variant", "test acc % (mean ± std)", "Δ vs baseline (paired)",
         "train loss (last epoch)", "s / run"], rows))


if __name__ == "__main__":
    main()
