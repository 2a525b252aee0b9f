"""benchmarks/compare.py (physnets compare): parameter matching, and a 2-step smoke run of the
tiny `residual` suite that writes its table, results and plots (CI runs nothing else from there)."""

import dataclasses
import json

import numpy as np
import pytest

from physnets_jax.training import compare
from physnets_jax.training.cli import main
from physnets_jax.training.compare import (
    SCALES,
    Scale,
    entry_config,
    format_table,
    headline_config,
    headline_train_config,
    match_width,
    param_count,
    run_suite,
    seed_style_val_loss,
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


def test_smoke_residual_suite_two_steps(tmp_path, capsys, monkeypatch):
    # The command's plumbing at a micro scale (one layer, width 32) and with two of the suite's four
    # entries (the width target, and the other preset with the other residual): each entry costs a
    # training- and an evaluation-step compilation, which dominated the whole test suite's time.
    micro = Scale(n_layer=1, n_head=2, base_width=32, block_size=16, batch_size=4, steps=500, lr=2e-3,
                  warmup_steps=40, eval_interval=50, eval_batches=1, eval_lengths=(16, 32))
    monkeypatch.setitem(compare.SCALES, "tiny", micro)
    entries = suite_entries("residual")
    assert [e.label for e in entries][::3] == ["gpt add", "ripplegpt orthogonal_parallel"]
    monkeypatch.setattr(compare, "suite_entries", lambda suite: entries[::3] if suite == "residual" else [])
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"KING:\nNow is the winter {i} of our discontent.\n\n" for i in range(300)))
    out = tmp_path / "results"
    argv = ["compare", "--suite", "residual", "--seeds", "1", "--steps", "2", "--data", str(corpus), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in result["rows"]] == ["gpt add", "ripplegpt orthogonal_parallel"]
    assert all(len(r["seeds"]) == 1 and r["val_loss_mean"] > 0 for r in result["rows"])
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + len(result["rows"]) and "ripplegpt orthogonal_parallel" in table
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(argv) == 2  # never overwrites earlier results without --overwrite
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["compare", "--suite", "nope", "--data", str(corpus)]) == 2
    assert ("unknown suite nope; valid suites: seeds, wave-ablation, residual, extrapolation, wave-headline"
            in capsys.readouterr().err)


def test_wave_headline_protocol_is_the_seed_runs():
    """At the seed's length (N = 5,000) the suite's settings are benchmark_config.json's and
    wave_benchmark.py's: 5,000 / 15,000 steps, lr 3e-4 / 6e-4, warmup 300, cosine to 0, RGD 0.3 with
    a 500-step resonance warmup, weight decay 0.01, beta2 0.999, QFE unprojected; shorter runs scale
    the warmups with N."""
    seed = dataclasses.replace(SCALES["seed"], steps=5000)
    classic, wave, wave_ce, classic_long = suite_entries("wave-headline")
    tc = headline_train_config(classic, seed, 0)
    assert (tc.steps, tc.lr, tc.optimizer, tc.loss, tc.warmup_steps, tc.min_lr_ratio) == (5000, 3e-4, "adamw", "ce", 300, 0.0)
    assert (tc.weight_decay, tc.beta1, tc.beta2, tc.grad_clip, tc.schedule) == (0.01, 0.9, 0.999, 1.0, "cosine")
    tw = headline_train_config(wave, seed, 0)
    assert (tw.steps, tw.lr, tw.optimizer, tw.loss, tw.warmup_steps) == (15000, 6e-4, "rgd", "qfe", 300)
    assert (tw.rgd_strength, tw.rgd_warmup, tw.qfe_lambda, tw.qfe_project) == (0.3, 500, 0.05, False)
    assert (headline_train_config(wave_ce, seed, 0).steps, headline_train_config(classic_long, seed, 0).lr) == (5000, 6e-4)
    short = headline_train_config(wave, dataclasses.replace(seed, steps=500), 0)
    assert (short.steps, short.warmup_steps, short.rgd_warmup) == (1500, 30, 50)
    cfg = headline_config(wave, seed, 1024)  # 6 x 384 with 6 heads: 64 waves per head, H W = d
    assert (cfg.wave.n_waves, cfg.dropout, cfg.vocab_size, cfg.wave.embedding, cfg.final_norm) == (64, 0.1, 1024, "blend", False)
    assert headline_config(classic, seed, 1024).dropout == 0.1


def test_seed_style_val_is_one_batch_of_the_training_split():
    """Train split all token 3, val split all token 5; a model whose collapse head favours 3 has a
    near-zero loss on the seed's "validation" and a large one on the held-out split."""
    from flax import nnx

    from physnets_core.config import preset
    from physnets_jax.model import build_model
    from physnets_jax.training.data import TokenData

    model = build_model(preset("wave_gpt-headline", "nano", vocab_size=8, n_layer=1, n_embd=16, block_size=8))
    model.head.proj.bias[...] = model.head.proj.bias[...].at[3].set(40.0)
    data = TokenData.from_splits(np.full(64, 3), np.full(64, 5))
    assert seed_style_val_loss(model, data, 2, 8, seed=0) < 1e-6
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    from physnets_jax.training.train import eval_loss

    assert float(eval_loss(graphdef, params, rest, *data.batch_at("val", 2, 8, 0, 0))) > 30


def test_wave_headline_suite_smoke(monkeypatch):
    """The suite's two seed entries (the control and the wave run; the other two only recombine their
    settings) at a toy scale: the wave run trains 3x the steps, every row reports the seed's
    one-training-batch "val" next to the held-out val, and the table shows both."""
    from physnets_jax.training import compare
    from physnets_jax.training.data import TokenData

    entries = suite_entries("wave-headline")
    assert [(e.preset, e.steps_factor, e.optimizer, e.loss, e.lr) for e in entries] == [
        ("classic", 1, "adamw", "ce", 3e-4), ("wave_gpt-headline", 3, "rgd", "qfe", 6e-4),
        ("wave_gpt-headline", 1, "adamw", "ce", 3e-4), ("classic", 3, "adamw", "ce", 6e-4)]
    monkeypatch.setattr(compare, "suite_entries", lambda suite: entries[:2])
    toy = Scale(n_layer=1, n_head=2, base_width=16, block_size=8, batch_size=2, steps=1, lr=1e-3, warmup_steps=0,
                eval_interval=1, eval_batches=1, eval_lengths=(8,))
    data = TokenData(np.arange(600) % 20)
    result = run_suite("wave-headline", scale=toy, seeds=(0,), data=data, vocab_size=20, log=lambda _m: None)
    rows = result["rows"]
    assert [(r["steps"], r["optimizer"], r["loss"], r["lr"]) for r in rows] == [(1, "adamw", "ce", 3e-4),
                                                                                (3, "rgd", "qfe", 6e-4)]
    assert result["vocab_size"] == 1024 and rows[1]["params"] == param_count(headline_config(entries[1], toy, 1024))
    for r in rows:  # an untrained 1024-way model: both losses near ln(1024) = 6.93
        assert 6.0 < r["seed_val_loss_mean"] < 8.5 and 6.0 < r["val_loss_mean"] < 8.5
    table = format_table(result)
    assert "seed's \"val\" (1 training batch, 1 seeds)" in table and "held-out val (1 seeds)" in table
    assert table.count("\n") == 1 + len(rows)
