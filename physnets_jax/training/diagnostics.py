"""Visual diagnostics of trained models as PNGs (`physnets plot --diagnostics RUN`).

Wave-Native GPT (embedding="wave"), the seed's plots, read from WavePacketEmbedding's parameters:
  wave_frequency_heatmap.png   base_freqs (vocab, n_waves)
  wave_phase_distribution.png  phases (vocab x n_waves) on the unit circle, and their histogram
  wave_harmonic_profiles.png   harmonic_amps (vocab, n_waves, n_harmonics): mean +- std per harmonic
  wave_packets.png             s_i(t) = sum_w sum_n A[i,w,n] sin(2 pi n f[i,w] t + phase[i,w])
  wave_interference.png        two packets, their superposition, and the token-token interference
                               matrix <s_i, s_j> / (|s_i| |s_j|) (in phase: +1, out of phase: -1)
RippleGPT (mixer="ripple"):
  ripple_decay_fields.png      exp(-|lambda_h| (i - j)) for j <= i, one panel per layer and head
                               (the attention prior each head multiplies into its softmax)
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    fig.savefig(path)
    _plt().close(fig)
    return path


def wave_packets(freqs: np.ndarray, phases: np.ndarray, amps: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Signals (tokens, len(t)) of s_i(t) = sum_w sum_n amps[i,w,n] sin(2 pi n freqs[i,w] t + phases[i,w])
    for freqs, phases (tokens, W) and amps (tokens, W, H)."""
    n = np.arange(1, amps.shape[-1] + 1)
    theta = 2 * np.pi * n[None, None, :, None] * freqs[..., None, None] * t + phases[..., None, None]
    return np.einsum("iwn,iwnt->it", amps, np.sin(theta))


def _token_labels(tokens: np.ndarray, decode: Callable[[list[int]], str] | None) -> list[str]:
    if decode is None:
        return [str(int(i)) for i in tokens]
    labels = []
    for i in tokens:
        try:
            text = decode([int(i)])
        except Exception:  # noqa: BLE001 (a byte that is not UTF-8 on its own)
            text = ""
        labels.append(repr(text) if text else str(int(i)))  # quoted, so that ' ' and '\n' show
    return labels


def plot_wave_diagnostics(embedding, out_dir: pathlib.Path, decode=None, n_tokens: int = 6) -> list[pathlib.Path]:
    """The Wave-Native GPT seed's plots from a WavePacketEmbedding; returns the PNG paths."""
    plt = _plt()
    freqs = np.asarray(embedding.base_freqs[...], np.float64)
    phases = np.asarray(embedding.phases[...], np.float64)
    amps = np.asarray(embedding.harmonic_amps[...], np.float64)
    V, W, H = amps.shape
    paths = []

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    im = ax.imshow(freqs, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="base frequency")
    ax.set_xlabel("wave component w")
    ax.set_ylabel("token id")
    ax.set_title(f"token frequency heatmap ({V} tokens x {W} waves)")
    paths.append(_save(fig, out_dir / "wave_frequency_heatmap.png"))

    fig = plt.figure(figsize=(10, 4.5), dpi=100)
    ax = fig.add_subplot(1, 2, 1, projection="polar")
    wrapped = np.mod(phases, 2 * np.pi).ravel()
    ax.scatter(wrapped, np.ones_like(wrapped) + 0.02 * np.random.default_rng(0).standard_normal(wrapped.size),
               s=4, alpha=0.4)
    ax.set_rticks([])
    ax.set_title("phases on the unit circle")
    ax = fig.add_subplot(1, 2, 2)
    ax.hist(wrapped, bins=48, range=(0, 2 * np.pi))
    ax.set_xlabel("phase mod 2 pi")
    ax.set_ylabel("count")
    ax.set_title("phase distribution")
    paths.append(_save(fig, out_dir / "wave_phase_distribution.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    per_token = amps.mean(axis=1)  # (V, H)
    n = np.arange(1, H + 1)
    ax.errorbar(n, per_token.mean(0), yerr=per_token.std(0), marker="o", capsize=4, label="mean +- std over tokens")
    ax.plot(n, 1.0 / n, linestyle=":", color="gray", label="init 1/n")
    ax.set_xticks(n, [f"{k}f" for k in n])
    ax.set_xlabel("harmonic")
    ax.set_ylabel("amplitude (mean over waves)")
    ax.set_title("harmonic amplitude profiles")
    ax.legend()
    paths.append(_save(fig, out_dir / "wave_harmonic_profiles.png"))

    tokens = np.arange(min(n_tokens, V))
    labels = _token_labels(tokens, decode)
    t = np.linspace(0.0, 2.0, 400)
    signals = wave_packets(freqs[tokens], phases[tokens], amps[tokens], t)
    fig, axes = plt.subplots(len(tokens), 1, figsize=(8, 1.3 * len(tokens) + 1), dpi=100, sharex=True, squeeze=False)
    for ax, s, label in zip(axes[:, 0], signals, labels, strict=True):
        ax.plot(t, s)
        ax.set_ylabel(label, rotation=0, labelpad=20)
    axes[-1, 0].set_xlabel("t")
    axes[0, 0].set_title("wave packets of sample tokens: sum_w sum_n A sin(2 pi n f t + phase)")
    paths.append(_save(fig, out_dir / "wave_packets.png"))

    k = min(32, V)
    all_signals = wave_packets(freqs[:k], phases[:k], amps[:k], t)
    unit = all_signals / np.maximum(np.linalg.norm(all_signals, axis=1, keepdims=True), 1e-12)
    overlap = unit @ unit.T
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    a, b = all_signals[0], all_signals[min(1, k - 1)]
    ax0.plot(t, a, alpha=0.6, label=f"token {_token_labels(np.array([0]), decode)[0]}")
    ax0.plot(t, b, alpha=0.6, label=f"token {_token_labels(np.array([min(1, k - 1)]), decode)[0]}")
    ax0.plot(t, a + b, color="black", label="superposition")
    ax0.set_xlabel("t")
    ax0.set_title("interference of two packets")
    ax0.legend(fontsize=8)
    im = ax1.imshow(overlap, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(im, ax=ax1, label="normalised overlap")
    ax1.set_title(f"interference matrix of the first {k} tokens")
    ax1.set_xlabel("token j")
    ax1.set_ylabel("token i")
    paths.append(_save(fig, out_dir / "wave_interference.png"))
    return paths


def ripple_decay_fields(decays: np.ndarray, length: int) -> np.ndarray:
    """(layers, heads, length, length) attention priors exp(-|lambda| (i - j)) for j <= i, 0 above
    the diagonal, from the per-head decay parameters (layers, heads)."""
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    dist = np.where(j <= i, i - j, np.inf)
    return np.exp(-np.abs(decays)[..., None, None] * dist)


def plot_ripple_diagnostics(model, out_dir: pathlib.Path, length: int = 48) -> list[pathlib.Path]:
    """One panel per layer and head of the ripple decay field; returns the PNG paths."""
    plt = _plt()
    decays = np.stack([np.asarray(block.mixer.decay[...], np.float64) for block in model.blocks])
    fields = ripple_decay_fields(decays, length)
    L, Hn = decays.shape
    fig, axes = plt.subplots(L, Hn, figsize=(2.2 * Hn + 1, 2.2 * L + 0.6), dpi=100, squeeze=False)
    for layer in range(L):
        for head in range(Hn):
            ax = axes[layer, head]
            ax.imshow(fields[layer, head], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"L{layer} H{head} |lambda|={abs(decays[layer, head]):.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"ripple decay exp(-|lambda| (i - j))\nrows: query i, columns: key j ({length} positions)",
                 fontsize=9)
    return [_save(fig, out_dir / "ripple_decay_fields.png")]


def plot_diagnostics(model, out_dir, decode=None) -> list[pathlib.Path]:
    """Every diagnostic that applies to the model (wave embedding, ripple mixer); ValueError if none."""
    out_dir = pathlib.Path(out_dir)
    cfg = model.cfg
    if cfg.embedding != "wave" and cfg.mixer != "ripple":
        raise ValueError(
            f"no diagnostics for embedding={cfg.embedding!r}, mixer={cfg.mixer!r}: they exist for "
            "embedding='wave' (Wave-Native GPT) and mixer='ripple' (RippleGPT)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if cfg.embedding == "wave":
        paths += plot_wave_diagnostics(model.embedding, out_dir, decode)
    if cfg.mixer == "ripple":
        paths += plot_ripple_diagnostics(model, out_dir)
    return paths
