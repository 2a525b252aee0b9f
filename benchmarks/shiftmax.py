"""ShiftMax vs softmax: speed (JAX jit and torch eager, forward and forward+backward) and
calibration (expected calibration error) of an MLP classifier (Linear -> BatchNorm -> GELU
layers, lof310's setup) on scikit-learn's digits, trained with cross-entropy, Brier and focal
losses computed on the normaliser's probabilities.

    python benchmarks/shiftmax.py            # speed + calibration, 3 seeds, 60 epochs
    python benchmarks/shiftmax.py --quick    # small shapes, 1 seed, 10 epochs
    python benchmarks/shiftmax.py --speed-only

Needs scikit-learn (pip install scikit-learn).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.timing import machine_line, markdown_table, median_seconds  # noqa: E402
from physnets_jax.ops.shiftmax import shiftmax as jshiftmax  # noqa: E402
from physnets_torch.ops.shiftmax import shiftmax as tshiftmax  # noqa: E402

# ---------------------------------------------------------------------------------- speed


def time_normaliser(jf, tf, x: np.ndarray, w: np.ndarray, repeats: int) -> dict[str, float]:
    """Median seconds of one normaliser: JAX jit and torch eager, forward and forward+backward."""
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    fwd = jax.jit(jf)
    bwd = jax.jit(jax.grad(lambda v: jnp.sum(wj * jf(v))))

    def torch_fwd():
        with torch.no_grad():
            tf(xt)

    def torch_fb():
        v = xt.clone().requires_grad_(True)
        torch.sum(wt * tf(v)).backward()

    return {
        "jax fwd": median_seconds(lambda: fwd(xj).block_until_ready(), repeats=repeats),
        "jax fwd+bwd": median_seconds(lambda: bwd(xj).block_until_ready(), repeats=repeats),
        "torch fwd": median_seconds(torch_fwd, repeats=repeats),
        "torch fwd+bwd": median_seconds(torch_fb, repeats=repeats),
    }


def speed_rows(shapes, repeats: int):
    rows = []
    for shape in shapes:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        soft = time_normaliser(jax.nn.softmax, lambda v: torch.softmax(v, -1), x, w, repeats)
        shift = time_normaliser(jshiftmax, tshiftmax, x, w, repeats)
        for kind in ("jax fwd", "jax fwd+bwd", "torch fwd", "torch fwd+bwd"):
            s, m = soft[kind], shift[kind]
            rows.append([str(shape), kind, f"{s * 1e6:.0f}", f"{m * 1e6:.0f}", f"{m / s:.2f}"])
    return rows


# ---------------------------------------------------------------------------- calibration

def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = d.data.astype(np.float32) / 16.0
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=0,
                                          stratify=d.target)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    return [torch.tensor(a) for a in ((xtr - mean) / std, ytr, (xte - mean) / std, yte)]


def make_mlp(seed: int, width: int = 128) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers, dim = [], 64
    for _ in range(2):
        layers += [torch.nn.Linear(dim, width), torch.nn.BatchNorm1d(width), torch.nn.GELU()]
        dim = width
    layers.append(torch.nn.Linear(dim, 10))
    return torch.nn.Sequential(*layers)


NORMALISERS = {
    "softmax": lambda z: torch.softmax(z, -1),
    "shiftmax (power 2, floor 0.01: defaults)": lambda z: tshiftmax(z),
    "shiftmax power 1": lambda z: tshiftmax(z, power=1),
    "shiftmax power 3": lambda z: tshiftmax(z, power=3),
    "shiftmax floor 0": lambda z: tshiftmax(z, floor=0.0),
}


def loss_fn(kind: str, probs: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, norm: str):
    """Mean loss on probabilities; softmax CE uses log_softmax (the stable, usual form)."""
    if norm == "softmax":
        logp = torch.log_softmax(logits, -1)
    else:
        logp = torch.log(probs)
    logp_y = logp.gather(1, y[:, None])[:, 0]
    p_y = probs.gather(1, y[:, None])[:, 0]
    if kind == "cross-entropy":
        return -logp_y.mean()
    if kind == "brier":
        onehot = torch.nn.functional.one_hot(y, 10).to(probs.dtype)
        return ((probs - onehot) ** 2).sum(-1).mean()
    return (-((1 - p_y) ** 2) * logp_y).mean()  # focal, gamma = 2


def ece(probs: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (equal-width confidence bins, top-1)."""
    conf, pred = probs.max(1), probs.argmax(1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return total


def train_eval(norm: str, kind: str, seed: int, data, epochs: int):
    xtr, ytr, xte, yte = data
    model = make_mlp(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xtr), generator=g).split(64):
            if len(idx) < 2:
                continue
            logits = model(xtr[idx])
            loss = loss_fn(kind, NORMALISERS[norm](logits), logits, ytr[idx], norm)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        probs = NORMALISERS[norm](model(xte)).double().numpy()
    y = yte.numpy()
    acc = 100 * (probs.argmax(1) == y).mean()
    nll = -np.log(probs[np.arange(len(y)), y]).mean()
    return acc, 100 * ece(probs, y), nll, probs.max(1).mean()


def main() -> None:
    """Print the speed table and the calibration table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"Machine: {machine_line()} (torch threads: 1)\n")
    if not args.skip_speed:
        shapes = [(256, 10), (64, 1024)] if args.quick else [(4096, 10), (1024, 1024), (16, 65536)]
        print("Speed, float32, softmax over the last axis (median µs; ratio = shiftmax / softmax):\n")
        print(markdown_table(["shape", "backend / pass", "softmax µs", "shiftmax µs", "ratio"],
                             speed_rows(shapes, repeats=5 if args.quick else 20)))
        print()
    if args.speed_only:
        return
    seeds, epochs = (1, 10) if args.quick else (args.seeds, args.epochs)
    data = digits()
    rows = []
    for kind in ("cross-entropy", "brier", "focal"):
        for norm in NORMALISERS:
            res = np.array([train_eval(norm, kind, s, data, epochs) for s in range(seeds)])
            mean, std = res.mean(0), res.std(0)
            rows.append([kind, norm, f"{mean[0]:.2f} ± {std[0]:.2f}", f"{mean[1]:.2f} ± {std[1]:.2f}",
                         f"{mean[2]:.3f} ± {std[2]:.3f}", f"{mean[3]:.3f}"])
            print(f"  {kind} {norm}: {res.tolist()}", file=sys.stderr, flush=True)
    print(f"Calibration on digits (1437 train / 360 test), MLP 64-128-128-10 (Linear, BatchNorm, "
          f"GELU), Adam 1e-3, batch 64, {epochs} epochs, seeds 0..{seeds - 1}; ECE with 15 bins:\n")
    print(markdown_table(["loss", "normaliser", "test acc %", "ECE % (lower better)",
                          "test NLL", "mean confidence"], rows))


if __name__ == "__main__":
    main()
