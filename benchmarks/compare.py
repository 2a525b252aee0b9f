"""Fair, multi-seed comparisons of the presets (iso-parameter, iso-tokens, same data, tokenizer
and schedule); the same as `physnets compare`. Suites: seeds, wave-ablation, residual,
extrapolation, and wave-headline, which replays the Wave-Native GPT headline run's own (unequal)
protocol next to a held-out validation (physnets_jax/training/compare.py says what each trains).

    python benchmarks/compare.py --suite seeds --scale tiny --data ../shared/data/tinyshakespeare.txt
    python benchmarks/compare.py --suite seeds --scale small-cpu --data PATH --out R   # ~90 min, 2 cores
    python benchmarks/compare.py --suite seeds --scale small-cpu --data PATH --out R --resume  # after Ctrl-C
    python benchmarks/compare.py --suite seeds --no-lr-sweep --data PATH       # every entry at the scale's lr
    python benchmarks/compare.py --suite residual --lr-grid 1e-3,2e-3,4e-3,8e-3 --data PATH
    python benchmarks/compare.py --suite extrapolation --scale tiny --data PATH
    python benchmarks/compare.py --suite wave-headline --scale tiny --seeds 2 --steps 250 --data PATH
    python benchmarks/compare.py --suite seeds,wave-ablation,residual,extrapolation --scale seed   # accelerator

Writes results/<suite>-<scale>-<tokenizer>-<time>/ (or --out) with suite.json (the settings, at the
start), runs/<entry>/<run>.json (each run as it finishes; --resume reuses them), and at the end
table.md, results.json, loss_curves.png, lr_sweep.png (with the sweep; on by default for seeds and
residual) and extrapolation.png (extrapolation suite); prints the table. docs/training.md,
"Comparison suites", gives the sweep's selection split and the resume rules.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from physnets_jax.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
