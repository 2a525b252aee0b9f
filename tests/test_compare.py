"""benchmarks/compare.py (physnets compare): parameter matching; the learning-rate sweep's choice
(argmin on the selection split, which is disjoint from the reported val split) and resume (finished
runs reused, numbers equal to an uninterrupted suite) with a stub trainer; bad input; and one real
smoke run (two residual entries, two rates, 12 steps, micro scale; interrupted, then resumed) that
writes the table, results and plots (CI runs nothing else from there)."""

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


MICRO = Scale(n_layer=1, n_head=2, base_width=32, block_size=16, batch_size=4, steps=500, lr=2e-3,
              warmup_steps=40, eval_interval=50, eval_batches=1, eval_lengths=(16, 32))


def _corpus(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"KING:\nNow is the winter {i} of our discontent.\n\n" for i in range(300)))
    return corpus


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_smoke_residual_suite_sweep_interrupt_resume(tmp_path, capsys, monkeypatch):
    # The command's plumbing at a micro scale (one layer, width 32) and with two of the suite's four
    # entries (the width target, and the other preset with the other residual), a two-rate sweep and
    # one seed: each (entry, rate) costs a training-step compilation, which dominates the time.
    # The first run is interrupted (KeyboardInterrupt, as SIGINT raises) after 4 of its 6 runs;
    # --resume trains only the 2 missing ones and leaves the 4 finished files byte for byte; an
    # uninterrupted run elsewhere gives bitwise the same numbers.
    monkeypatch.setitem(compare.SCALES, "tiny", MICRO)
    entries = suite_entries("residual")
    assert [e.label for e in entries][::3] == ["gpt add", "ripplegpt orthogonal_parallel"]
    monkeypatch.setattr(compare, "suite_entries", lambda suite: entries[::3] if suite == "residual" else [])
    corpus = _corpus(tmp_path)
    real_train_run = compare.train_run
    calls = []

    def interrupting(*args, **kwargs):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(args[2].lr)
        return real_train_run(*args, **kwargs)

    monkeypatch.setattr(compare, "train_run", interrupting)
    out = tmp_path / "results"
    argv = ["compare", "--suite", "residual", "--seeds", "1", "--steps", "12", "--lr-grid", "4e-3,1e-3",
            "--lr-extend", "0", "--data", str(corpus), "--out", str(out)]
    assert main(argv) == 130
    assert "run the same command with --resume" in capsys.readouterr().err
    finished = _snapshot(out)
    assert not (out / "results.json").exists() and len([p for p in finished if p.parts[0] == "runs"]) == 4
    capsys.readouterr()
    assert main(argv) == 2  # never overwrites earlier results without --overwrite or --resume
    assert "already exists; pass --overwrite to replace it, or --resume" in capsys.readouterr().err
    assert main([*argv, "--resume", "--seeds", "2"]) == 2  # other settings: refused, nothing written
    assert "was made with seeds=[0], this command has seeds=[0, 1]" in capsys.readouterr().err
    assert _snapshot(out) == finished
    calls.clear()
    monkeypatch.setattr(compare, "train_run", lambda *a, **k: calls.append(a[2].lr) or real_train_run(*a, **k))
    assert main([*argv, "--resume"]) == 0
    assert len(calls) == 2
    after = _snapshot(out)
    assert all(after[p] == b for p, b in finished.items())  # finished runs untouched
    result = json.loads((out / "results.json").read_text())
    assert (result["runs_trained"], result["runs_reused"]) == (2, 4)
    assert [r["label"] for r in result["rows"]] == ["gpt add", "ripplegpt orthogonal_parallel"]
    for r in result["rows"]:
        sweep = r["lr_sweep"]
        assert sweep["grid"] == [1e-3, 4e-3] and sweep["steps"] == 3 and len(sweep["runs"]) == 2
        losses = [run["selection_loss"] for run in sweep["runs"]]
        assert r["lr"] == sweep["chosen_lr"] == sweep["grid"][int(np.argmin(losses))]
        assert r["seeds"][0]["lr"] == r["lr"] and r["val_loss_mean"] > 0
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + len(result["rows"]) and "| lr (swept) |" in table
    assert f"| {result['rows'][1]['lr']:g} |" in table
    for name in ("loss_curves.png", "lr_sweep.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    calls.clear()
    whole = tmp_path / "whole"
    assert main([*argv[:-1], str(whole)]) == 0 and len(calls) == 6
    again = json.loads((whole / "results.json").read_text())
    assert [(r["lr"], r["val_loss_mean"], r["lr_sweep"]["runs"]) for r in again["rows"]] == [
        (r["lr"], r["val_loss_mean"], r["lr_sweep"]["runs"]) for r in result["rows"]]


def test_bad_compare_inputs_write_nothing(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    out = tmp_path / "results"
    base = ["compare", "--suite", "seeds", "--data", str(corpus), "--out", str(out)]
    for extra, message in [
        (["--lr-grid", "1e-3"], "lr grid 0.001 has 1 distinct value(s); a sweep needs at least 2 learning rates"),
        (["--lr-grid", "1e-3,1e-3"], "has 1 distinct value(s)"),
        (["--lr-grid", "1e-3,-2e-3"], "learning rate -0.002 must be a positive finite number"),
        (["--lr-grid", "1e-3,0"], "learning rate 0 must be a positive finite number"),
        (["--lr-grid", "1e-3,fast"], "'fast' is not a number"),
        (["--lr-grid", "1e-3,2e-3", "--no-lr-sweep"], "pass one of them"),
        (["--scale", "huge"], "unknown scale 'huge'; valid scales: tiny, small-cpu, seed"),
        (["--resume"], f"--resume: {out} holds no suite.json"),
        (["--resume", "--overwrite"], "pass one of them"),
        (["--lr-extend", "-1"], "--lr-extend -1: the number of rates a sweep may add past the grid's edge must be >= 0"),
        (["--lr-extend", "1", "--no-lr-sweep"], "pass one of them"),
    ]:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists()
    assert main(["compare", "--suite", "wave-headline", "--lr-sweep", "--out", str(out)]) == 2
    assert "takes no --lr-sweep" in capsys.readouterr().err and not out.exists()


def _stub_suite(monkeypatch, scores, calls, interrupt_at=None, data=None):
    """run_suite on the residual suite's entries 0 and 3 with train_run replaced by a stub whose
    loss is scores[(mixer, lr)] on the selection split (None: diverged) and 3 + lr + seed/100 on the
    reported split; records (mixer, lr, seed, steps, split) per call."""
    from physnets_jax.training.data import TokenData

    entries = suite_entries("residual")[::3]
    monkeypatch.setattr(compare, "suite_entries", lambda suite: entries)
    data = TokenData(np.arange(2000) % 50) if data is None else data

    def stub(cfg, d, tc, *, extras=None, allow_divergence=False):
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        selecting = d is not data
        if selecting:  # the selection split is the training split's tail, disjoint from data.val
            assert len(d.train) + len(d.val) == len(data.train)
            assert np.array_equal(d.val, data.train[-len(d.val):]) and np.array_equal(d.train, data.train[:len(d.train)])
        calls.append((cfg.mixer, tc.lr, tc.seed, tc.steps, "select" if selecting else "val"))
        loss = scores[(cfg.mixer, tc.lr)] if selecting else 3 + tc.lr + tc.seed / 100
        return {"seed": tc.seed, "lr": tc.lr, "steps": tc.steps, "val_loss": loss, "train_loss": loss,
                "tokens_per_s": 1.0, "seconds": 0.0, "val_curve": [[tc.steps, loss]] if loss is not None else [],
                **({"diverged": "stub"} if loss is None else {})}

    monkeypatch.setattr(compare, "train_run", stub)
    return data


def test_sweep_picks_the_argmin_of_the_selection_split(monkeypatch):
    scores = {("attention", 1e-3): 2.0, ("attention", 2e-3): 1.25, ("attention", 4e-3): 1.5,
              ("ripple", 1e-3): 0.5, ("ripple", 2e-3): 0.7, ("ripple", 4e-3): None}
    calls = []
    data = _stub_suite(monkeypatch, scores, calls)
    result = run_suite("residual", scale=MICRO, seeds=(0, 1), data=data, vocab_size=50,
                       lr_grid=[4e-3, 1e-3, 2e-3], lr_extend=0, log=lambda _m: None)
    assert [r["lr"] for r in result["rows"]] == [2e-3, 1e-3]
    sweep_steps = round(MICRO.steps * MICRO.sweep_fraction)
    assert calls == [
        *[("attention", lr, 0, sweep_steps, "select") for lr in (1e-3, 2e-3, 4e-3)],
        ("attention", 2e-3, 0, 500, "val"), ("attention", 2e-3, 1, 500, "val"),
        *[("ripple", lr, 0, sweep_steps, "select") for lr in (1e-3, 2e-3, 4e-3)],
        ("ripple", 1e-3, 0, 500, "val"), ("ripple", 1e-3, 1, 500, "val")]
    gpt = result["rows"][0]
    assert gpt["val_loss_mean"] == pytest.approx(3 + 2e-3 + 0.005)  # the reported split's numbers only
    assert [run["selection_loss"] for run in result["rows"][1]["lr_sweep"]["runs"]] == [0.5, 0.7, None]
    assert "| 0.002 |" in format_table(result)
    scores.update({k: None for k in scores})
    with pytest.raises(ValueError, match="entry 'gpt add': every rate of the sweep diverged"):
        run_suite("residual", scale=MICRO, seeds=(0,), data=data, vocab_size=50, lr_grid=[1e-3, 2e-3],
                  lr_extend=0, log=lambda _m: None)


def test_sweep_extends_past_the_edge_until_the_best_rate_is_bracketed(monkeypatch):
    # gpt: the loss falls with the rate up to 8e-3 (two steps past the grid's top, 4e-3), so the grid
    # grows by 8e-3, then 1.6e-2, where the loss rises again: 8e-3 is chosen, bracketed. ripple: the
    # best rate is the grid's bottom and the limit (2) stops the extension at 2.5e-4, still the best.
    # A diverged top rate is a worse neighbour, not a reason to extend.
    gpt = {1e-3: 2.0, 2e-3: 1.8, 4e-3: 1.6, 8e-3: 1.5, 1.6e-2: 1.7}
    ripple = {1e-3: 0.5, 2e-3: 0.7, 4e-3: 0.9, 5e-4: 0.45, 2.5e-4: 0.44}
    scores = {**{("attention", k): v for k, v in gpt.items()}, **{("ripple", k): v for k, v in ripple.items()}}
    calls = []
    data = _stub_suite(monkeypatch, scores, calls)
    result = run_suite("residual", scale=MICRO, seeds=(0,), data=data, vocab_size=50,
                       lr_grid=[1e-3, 2e-3, 4e-3], log=lambda _m: None)
    swept = [(c[1]) for c in calls if c[4] == "select"]
    assert swept == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 1e-3, 2e-3, 4e-3, 5e-4, 2.5e-4]
    gpt_row, ripple_row = result["rows"]
    assert (gpt_row["lr"], gpt_row["lr_sweep"]["extended"]) == (8e-3, [8e-3, 1.6e-2])
    assert [r["lr"] for r in gpt_row["lr_sweep"]["runs"]] == [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    assert (ripple_row["lr"], ripple_row["lr_sweep"]["extended"]) == (2.5e-4, [5e-4, 2.5e-4])
    assert gpt_row["lr_sweep"]["grid"] == [1e-3, 2e-3, 4e-3]
    calls.clear()
    scores.update({("attention", 8e-3): None, ("ripple", 5e-4): 0.6})
    result = run_suite("residual", scale=MICRO, seeds=(0,), data=data, vocab_size=50,
                       lr_grid=[1e-3, 2e-3, 4e-3], log=lambda _m: None)
    assert [r["lr_sweep"]["extended"] for r in result["rows"]] == [[8e-3], [5e-4]]
    assert [r["lr"] for r in result["rows"]] == [4e-3, 1e-3]
    with pytest.raises(ValueError, match="lr_extend -1: the number of rates"):
        run_suite("residual", scale=MICRO, seeds=(0,), data=data, vocab_size=50, lr_grid=[1e-3, 2e-3],
                  lr_extend=-1, log=lambda _m: None)


def test_resume_reuses_finished_runs(tmp_path, monkeypatch):
    scores = {(m, lr): 1 + lr * 100 + (m == "ripple") / 3 for m in ("attention", "ripple") for lr in (1e-3, 2e-3)}
    calls = []
    data = _stub_suite(monkeypatch, scores, calls)
    kw = dict(scale=MICRO, seeds=(0, 1), data=data, vocab_size=50, lr_grid=[1e-3, 2e-3], lr_extend=0,
              log=lambda _m: None)
    whole = run_suite("residual", folder=tmp_path / "whole", **kw)
    assert len(calls) == 8
    calls.clear()
    _stub_suite(monkeypatch, scores, calls, interrupt_at=5, data=data)
    with pytest.raises(KeyboardInterrupt):
        run_suite("residual", folder=tmp_path / "cut", **kw)
    assert len(list((tmp_path / "cut").rglob("*.json"))) == 5
    assert not list((tmp_path / "cut").rglob("*.tmp"))
    calls.clear()
    _stub_suite(monkeypatch, scores, calls, data=data)
    resumed = run_suite("residual", folder=tmp_path / "cut", **kw)
    assert calls == [("ripple", 2e-3, 0, 125, "select"), ("ripple", 1e-3, 0, 500, "val"), ("ripple", 1e-3, 1, 500, "val")]
    assert (resumed.pop("runs_trained"), resumed.pop("runs_reused")) == (3, 5)
    assert (whole.pop("runs_trained"), whole.pop("runs_reused")) == (8, 0)
    assert json.dumps(resumed) == json.dumps(whole)


def test_small_cpu_reports_checkpoints_and_ranks():
    """Checkpoint columns at 1/8, 1/4, 1/2 of the budget read the evaluations at those steps; ranks
    per column (here the order flips between 1/8 and the end)."""
    sc = SCALES["small-cpu"]
    assert sc.report_fractions == (1 / 8, 1 / 4, 1 / 2) and sc.steps % (8 * sc.eval_interval) == 0
    eighth = sc.steps // 8
    curve_a = [[s, 3.0 - s / 1000] for s in range(sc.eval_interval, sc.steps + 1, sc.eval_interval)]
    curve_b = [[s, 2.9 - s / 5000] for s, _ in curve_a]
    rows = []
    for label, curve in (("a", curve_a), ("b", curve_b)):
        per_seed = [{"val_curve": curve, "val_loss": curve[-1][1]}]
        rows.append({"label": label, "params": 1, "n_embd": 8, "optimizer": "adamw", "loss": "ce", "lr": 2e-3,
                     "val_loss_mean": curve[-1][1], "val_loss_std": 0.0, "ppl_mean": 1.0, "tokens_per_s": 1.0,
                     "checkpoints": compare._checkpoint_summary(per_seed, sc)})
    assert [c["step"] for c in rows[0]["checkpoints"]] == [eighth, 2 * eighth, 4 * eighth, 8 * eighth]
    assert rows[0]["checkpoints"][0]["val_loss_mean"] == 3.0 - eighth / 1000
    table = format_table({"suite": "seeds", "seeds": [0], "scale": dataclasses.asdict(sc), "rows": rows})
    assert (f"| val @ 1/8 (step {eighth}) | val @ 1/4 (step {2 * eighth}) | val @ 1/2 (step {4 * eighth}) |"
            in table)
    a_first = 3.0 - eighth / 1000
    assert a_first > 2.9 - eighth / 5000  # b leads at 1/8 ...
    assert f"| a | 1 | 8 | adamw | ce | 0.002 | {a_first:.4f} +- 0.0000 (2) |" in table
    assert table.splitlines()[2].endswith(f"| {3.0 - sc.steps / 1000:.4f} +- 0.0000 (1) | 1.00 | 1 |")  # ... a at the end


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
