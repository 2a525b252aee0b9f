"""Fair, multi-seed comparisons of the presets (iso-parameter, iso-tokens, same data, tokenizer
and schedule); the same as `physnets compare`. Suites: seeds, wave-ablation, residual,
extrapolation, and wave-headline, which replays the Wave-Native GPT headline run's own (unequal)
protocol next to a held-out validation (physnets_jax/training/compare.py says what each trains).

    python benchmarks/compare.py --suite seeds --scale tiny --data ../shared/data/tinyshakespeare.txt
    python benchmarks/compare.py --suite extrapolation --scale tiny --data PATH
    python benchmarks/compare.py --suite wave-headline --scale tiny --seeds 2 --steps 250 --data PATH
    python benchmarks/compare.py --suite seeds,wave-ablation,residual,extrapolation --scale seed   # accelerator

Writes results/<suite>-<scale>-<tokenizer>-<time>/ with table.md, results.json, loss_curves.png
(and extrapolation.png), and prints the table.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from physnets_jax.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
