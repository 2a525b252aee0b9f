"""benchmarks/compare.py (physnets compare): parameter matching, and a 2-step smoke run of the
tiny `residual` suite that writes its table, results and plots (CI runs nothing else from there)."""

import json

import pytest

from physnets_jax.training.cli import main
from physnets_jax.training.compare import (
    SCALES,
    entry_config,
    match_width,
    param_count,
    suite_entries,
)


@pytest.mark.parametrize("suite", ["seeds", "wave-ablation", "residual", "extrapolation"])
def test_every_entry_is_matched_within_five_percent(suite):
    scale = SCALES["tiny"]
    entries = suite_entries(suite)
    target = param_count(entry_config(entries[0], scale, 65, scale.base_width))
    for entry in entries:
        cfg, count = match_width(entry, scale, 65, target)
        assert abs(count - target) <= 0.05 * target, entry.label
        assert cfg.n_embd % cfg.n_head == 0 and cfg.block_size == scale.block_size
        assert count == param_count(cfg)


def test_unmatchable_target_names_the_entry():
    entry = suite_entries("seeds")[0]
    with pytest.raises(ValueError, match="entry 'gpt' cannot be matched to 10 parameters within 5%"):
        match_width(entry, SCALES["tiny"], 65, 10)


def test_smoke_residual_suite_two_steps(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"KING:\nNow is the winter {i} of our discontent.\n\n" for i in range(300)))
    out = tmp_path / "results"
    argv = ["compare", "--suite", "residual", "--seeds", "1", "--steps", "2", "--data", str(corpus), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in result["rows"]] == [e.label for e in suite_entries("residual")]
    assert all(len(r["seeds"]) == 1 and r["val_loss_mean"] > 0 for r in result["rows"])
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + len(result["rows"]) and "ripplegpt orthogonal_parallel" in table
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(argv) == 2  # never overwrites earlier results without --overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["compare", "--suite", "nope", "--data", str(corpus)]) == 2
    assert "unknown suite nope; valid suites: seeds, wave-ablation, residual, extrapolation" in capsys.readouterr().err
