"""The `physnets` command and train_jax.py: a tiny run, export to both backends (logits agree),
sample, eval, plot, resume checks and bad input."""

import json
import shutil

import numpy as np
import pytest
import torch

import physnets_jax
import physnets_torch
from physnets_jax.training.cli import main, train_main

TEXT = "".join(f"ROMEO:\nBut soft, what light {i} through yonder window breaks?\n\n" for i in range(200))
TINY = ["--preset", "ripplegpt", "--size", "nano", "--block-size", "16", "--steps", "4", "--batch-size", "4",
        "--eval-interval", "2", "--eval-batches", "1", "--log-interval", "1", "--ckpt-interval", "2",
        "--sample-tokens", "8", "--no-progress", "--seed", "1", "--dropout", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One trained tiny run folder (shared by the tests below)."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    run_dir = root / "run"
    assert train_main([*TINY, "--data", str(corpus), "--run-dir", str(run_dir), "--eval-lengths", "16"]) == 0
    return run_dir


def test_run_folder_contents(run, capsys):
    names = {p.name for p in run.iterdir()}
    assert {"run.json", "config.json", "tokenizer.json", "metrics.jsonl", "loss.png", "checkpoints",
            "eval_lengths.json"} <= names
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == [2, 4]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all("val_loss" in r for r in records if r["step"] % 2 == 0)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads((run / "eval_lengths.json").read_text())
    assert [r["length"] for r in rows] == [16] and all("val_loss" in r for r in rows)


def test_export_loads_in_both_backends_with_equal_logits(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run), str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "tokenizer.json"}
    jm = physnets_jax.load_pretrained(out)
    tm = physnets_torch.load_pretrained(out)
    tokens = np.random.default_rng(0).integers(0, jm.cfg.vocab_size, (2, 24)).astype(np.int32)
    jax_logits = np.asarray(jm(tokens))
    with torch.no_grad():
        torch_logits = tm(torch.from_numpy(tokens).long()).numpy()
    # same weights, two frameworks, float32: agree to float32 rounding of the whole model
    np.testing.assert_allclose(jax_logits, torch_logits, rtol=1e-5, atol=1e-5)
    # the export is the checkpoint's parameters exactly
    from physnets_jax.state import flat_params
    from physnets_jax.training.checkpoint import Checkpointer

    leaves, meta = Checkpointer(run / "checkpoints").restore_arrays()
    saved = dict(zip(meta["param_names"], leaves, strict=False))
    for name, value in flat_params(jm).items():
        np.testing.assert_array_equal(value, saved[name])
    # exporting over it again needs --overwrite
    assert main(["export", str(run), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run / "checkpoints" / "2"), str(out), "--overwrite"]) == 0


def test_sample_eval_plot(run, tmp_path, capsys):
    assert main(["sample", str(run), "--tokens", "12", "--prompt", "ROMEO:\\n"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:\n")
    assert main(["eval", str(run), "--eval-lengths", "16,48", "--batches", "1", "--batch-size", "2"]) == 0
    table = capsys.readouterr().out
    assert "| 16 (train block) |" in table and "| 48 |" in table
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(run / "metrics.jsonl", other / "metrics.jsonl")
    png = tmp_path / "curves.png"
    assert main(["plot", str(run), str(other), "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_resume_checks_and_never_overwrites(run, capsys):
    # an existing run folder is never replaced without --overwrite
    assert train_main([*TINY, "--run-dir", str(run)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    # a finished run resumes to its end with nothing left to do
    assert train_main(["--run-dir", str(run), "--resume", "--no-progress", "--sample-tokens", "0", "--no-plot"]) == 0
    # other model options: say what differs
    assert train_main(["--run-dir", str(run), "--resume", "--size", "micro"]) == 2
    err = capsys.readouterr().err
    assert "different model config" in err and "n_embd: run 32, given 128" in err
    assert train_main(["--run-dir", str(run), "--resume", "--tokenizer", "bpe"]) == 2
    assert "tokenizer='char'" in capsys.readouterr().err


def test_bad_input_messages(tmp_path, capsys):
    assert train_main(["--preset", "nope", "--run-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'nope'; valid presets:" in err and "ripplegpt" in err
    assert train_main(["--size", "huge", "--run-dir", str(tmp_path / "b")]) == 2
    assert "valid sizes: nano, micro, small" in capsys.readouterr().err
    assert train_main(["--mesh", "model:2", "--run-dir", str(tmp_path / "c")]) == 2
    assert "AXIS one of data, fsdp" in capsys.readouterr().err
    assert train_main(["--data", str(tmp_path / "missing.txt"), "--run-dir", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert train_main(["--set", "n_embd=33", "--run-dir", str(tmp_path / "e"), "--size", "nano",
                       "--data", __file__]) == 2
    assert "n_embd=33 must be divisible by n_head=2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main(["--optimizer", "lion"])
    assert "invalid choice: 'lion' (choose from adamw, sgd, rgd)" in capsys.readouterr().err.replace("'adamw', 'sgd', 'rgd'", "adamw, sgd, rgd")


def test_ablation_flag_sets_the_seeds_experiment(tmp_path):
    """--ablation pure_wave_linear: wave_gpt with pure linear attention, RGD + QFE and the seed's
    hyper-parameters; an explicit option still wins over the ablation's value."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    args = [*TINY[2:], "--ablation", "pure_wave_linear", "--lr", "5e-4", "--data", str(corpus),
            "--run-dir", str(tmp_path / "run"), "--no-plot", "--sample-tokens", "0"]
    assert train_main(args) == 0
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    model, train = saved["model_config"], saved["train_config"]
    assert (model["embedding"], model["mixer"], model["wave"]["attention"], model["wave"]["mode"]) == (
        "wave", "wave", "pure", "linear")
    assert (train["optimizer"], train["loss"], train["rgd_strength"], train["rgd_warmup"]) == ("rgd", "qfe", 0.3, 500)
    assert train["lr"] == 5e-4 and train["warmup_steps"] == 500
    with pytest.raises(SystemExit):
        train_main(["--ablation", "pure"])


def test_plot_diagnostics_for_ripple_and_wave_models(run, tmp_path, capsys):
    from physnets_jax.model import build_model

    assert main(["plot", "--diagnostics", str(run)]) == 0
    assert (run / "diagnostics" / "ripple_decay_fields.png").read_bytes()[:4] == b"\x89PNG"
    wave_export = tmp_path / "wave"
    physnets_jax.save_pretrained(build_model("wave_gpt-nano"), wave_export)
    out = tmp_path / "wave_plots"
    assert main(["plot", "--diagnostics", str(wave_export), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "wave_frequency_heatmap.png", "wave_harmonic_profiles.png", "wave_interference.png",
        "wave_packets.png", "wave_phase_distribution.png"]
    gpt_export = tmp_path / "gpt"
    physnets_jax.save_pretrained(build_model("gpt-nano"), gpt_export)
    capsys.readouterr()
    assert main(["plot", "--diagnostics", str(gpt_export)]) == 2
    assert "no diagnostics for embedding='learned', mixer='attention'" in capsys.readouterr().err


def test_diagnostic_fields_match_hand_values():
    from physnets_jax.training.diagnostics import ripple_decay_fields, wave_packets

    field = ripple_decay_fields(np.array([[-0.8, 0.5]]), 3)
    e = np.exp
    np.testing.assert_allclose(field[0, 0], [[1, 0, 0], [e(-0.8), 1, 0], [e(-1.6), e(-0.8), 1]], rtol=1e-12)
    np.testing.assert_allclose(field[0, 1, 2], [e(-1.0), e(-0.5), 1], rtol=1e-12)
    # one token, one wave at f = 1, phase 0, amplitudes (1, 0.5): sin(pi/4) + 0.5 sin(pi/2) at t = 1/8
    s = wave_packets(np.array([[1.0]]), np.array([[0.0]]), np.array([[[1.0, 0.5]]]), np.array([0.125]))
    np.testing.assert_allclose(s, [[np.sqrt(0.5) + 0.5]], rtol=1e-12)
