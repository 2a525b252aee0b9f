"""Where the log-space (Heinsen) GateLoop scan loses precision: relative errors in float32 of the
states and of the gradients w.r.t. kv and a, against a float64 loop, as |A_T| = |sum log a| grows.
Prints a markdown table (docs/gateloop.md, "Heinsen scan: limits").

    python benchmarks/gateloop_heinsen.py
    python benchmarks/gateloop_heinsen.py --peer-site <site-packages holding gateloop-transformer 0.2.5>

Inputs: a = sigmoid(N(shift, 1)), kv ~ N(0, 1), shape (2, T, 4), loss sum(w h) with w ~ N(0, 1).
Columns: physnets_jax and physnets_torch gate_loop_scan_heinsen, the sequential scan (lax.scan,
float32) for scale, and, with --peer-site, the published package's heinsen_associative_scan
(torch.logcumsumexp, whose backward loses the a gradient). Each cell: states / d kv / d a.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.timing import machine_line, markdown_table  # noqa: E402
from physnets_jax.ops import gate_loop as jops  # noqa: E402
from physnets_torch.ops import gate_loop as tops  # noqa: E402


def _reference(a, kv, w):
    """float64 states and gradients (w.r.t. a, kv) of sum(w h) by loops (reverse recurrence)."""
    h = np.zeros_like(kv)
    prev = np.zeros_like(kv[:, 0])
    for t in range(kv.shape[1]):
        prev = a[:, t] * prev + kv[:, t]
        h[:, t] = prev
    G = np.zeros_like(kv)
    nxt = np.zeros_like(kv[:, 0])
    for t in range(kv.shape[1] - 1, -1, -1):
        nxt = w[:, t] + (a[:, t + 1] * nxt if t + 1 < kv.shape[1] else 0)
        G[:, t] = nxt
    h_prev = np.concatenate([np.zeros_like(h[:, :1]), h[:, :-1]], 1)
    return h, G, G * h_prev


def _rel(x, ref) -> float:
    return float(np.abs(np.asarray(x, np.float64) - ref).max() / np.abs(ref).max())


def _jax(fn, a, kv, w):
    def loss(x, y):
        h = fn(x, y)
        return jnp.sum(jnp.asarray(w, jnp.float32) * h), h

    (_, h), (ga, gk) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        jnp.asarray(a, jnp.float32), jnp.asarray(kv, jnp.float32))
    return h, gk, ga


def _torch(fn, a, kv, w):
    ta = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    tk = torch.tensor(kv, dtype=torch.float32, requires_grad=True)
    h = fn(ta, tk)
    (h * torch.tensor(w, dtype=torch.float32)).sum().backward()
    return h.detach().numpy(), tk.grad.numpy(), ta.grad.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peer-site", default=None, help="site-packages with gateloop_transformer")
    args = parser.parse_args()
    peer = None
    if args.peer_site:
        sys.path.append(args.peer_site)
        from gateloop_transformer.simplified_gate_loop import heinsen_associative_scan

        def peer(a, kv):
            return heinsen_associative_scan(a, kv)[1]

    rng = np.random.default_rng(0)
    rows = []
    for shift in (0.0, -3.0, -6.0):
        for T in (64, 256, 1024, 4096):
            a = 1 / (1 + np.exp(-(rng.normal(size=(2, T, 4)) + shift)))
            kv, w = rng.normal(size=(2, T, 4)), rng.normal(size=(2, T, 4))
            A = float(np.abs(np.log(a).sum(1)).max())
            ref = _reference(a, kv, w)
            cells = {
                "jax heinsen": _jax(jops.gate_loop_scan_heinsen, a, kv, w),
                "torch heinsen": _torch(tops.gate_loop_scan_heinsen, a, kv, w),
                "jax sequential": _jax(jops.gate_loop_scan_sequential, a, kv, w),
            }
            if peer is not None:
                cells["peer heinsen (0.2.5)"] = _torch(peer, a, kv, w)
            row = [f"N({shift:g}, 1)", T, f"{A:,.0f}"]
            row += [" / ".join(f"{_rel(x, r):.1e}" for x, r in zip(got, ref, strict=True)) for got in cells.values()]
            rows.append(row)
            print("  " + " | ".join(str(c) for c in row), file=sys.stderr, flush=True)
    print(f"Machine: {machine_line()}")
    print("\nfloat32 relative error (max |err| / max |ref|) of states / d kv / d a against a float64 loop\n")
    print(markdown_table(["logit of a", "T", "|A_T|", *cells], rows))
    print(f"\nCommand: python benchmarks/gateloop_heinsen.py {' '.join(sys.argv[1:])}".rstrip())


if __name__ == "__main__":
    main()
