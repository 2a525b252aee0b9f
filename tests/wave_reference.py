"""Independent numpy references for the Wave-Native GPT pieces, written straight from the seed's
formulas (spectral_gpt/wave_gpt.py, physics_optim.py) in float64, with explicit loops where the
production code is vectorised or chunked. Weights come in as {name: array} in torch layout
(Linear weight (out, in)), i.e. the output of physnets_torch.convert.jax_to_torch."""

from __future__ import annotations

import math

import numpy as np


def _lin(p, name, x):
    y = x @ p[f"{name}.weight"].T
    if f"{name}.bias" in p:
        y = y + p[f"{name}.bias"]
    return y


def _heads(y, H):  # (B, T, H*W) -> (B, H, T, W)
    B, T, _ = y.shape
    return y.reshape(B, T, H, -1).transpose(0, 2, 1, 3)


def _normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _softmax_causal(scores):
    T = scores.shape[-1]
    s = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def wave_attention(p, x, *, variant, H, W, kernel="elu1", mode="quadratic", score_cap=None):
    """The seed's three attention classes (eval mode) on x (B, T, D): (B, T, D). score_cap: quadratic
    pure attention applies the kernel to min(score, score_cap) (None: the seed's uncapped score)."""
    B, T, D = x.shape
    v = _heads(_lin(p, "v_proj", x), H)
    t = np.arange(T, dtype=np.float64)[None, None, :, None]
    if variant == "interference":
        q = _normalize(_heads(_lin(p, "q_proj", x), H) + p["q_phase"])
        k = _normalize(_heads(_lin(p, "k_proj", x), H) + p["k_phase"])
        out = _softmax_causal(q @ k.transpose(0, 1, 3, 2) / p["temperature"]) @ v
    elif variant == "physics":
        freq = _heads(_lin(p, "freq_proj", x), H)
        phase0 = _heads(_lin(p, "phase_proj", x), H)
        amp = np.log1p(np.exp(_heads(_lin(p, "amp_proj", x), H))) + 1e-8
        theta = freq * t + phase0
        phasor = (amp * np.exp(1j * theta)).sum(-1)  # complex, as the seed
        a2 = (amp**2).sum(-1)
        intensity = a2[..., :, None] + a2[..., None, :] + 2 * (phasor[..., :, None] * np.conj(phasor[..., None, :])).real
        out = _softmax_causal(intensity * p["temperature"] / math.sqrt(W)) @ v
    else:
        q = np.sin(_heads(_lin(p, "q_freq", x), H) * t + _heads(_lin(p, "q_phase", x), H))
        k = np.sin(_heads(_lin(p, "k_freq", x), H) * t + _heads(_lin(p, "k_phase", x), H))
        q = _normalize(q) * W**0.25
        k = _normalize(k) * W**0.25
        phi = {
            "elu1": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))) + 1.0,
            "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
            "exp": np.exp,
            "linear": lambda z: z,
        }[kernel]
        if mode == "linear" and kernel != "linear":
            # the seed's linear mode: cumulative (B, H, T, W, D) state, materialised
            qp, kp = phi(q), phi(k)
            S = np.cumsum(np.einsum("bhtw,bhtd->bhtwd", kp, v), axis=2)
            Z = np.cumsum(kp, axis=2)
            num = np.einsum("bhtw,bhtwd->bhtd", qp, S)
            den = np.einsum("bhtw,bhtw->bht", qp, Z)[..., None]
            out = num / (den + 1e-6)
        else:
            # quadratic mode (and the identity kernel in either mode): explicit loops over t, s
            scale = p["interference_scale"].reshape(-1)
            out = np.zeros_like(v)
            for b in range(B):
                for h in range(H):
                    for i in range(T):
                        for j in range(i + 1):
                            score = scale[h] * q[b, h, i] @ k[b, h, j]
                            if score_cap is not None:
                                score = min(score, score_cap)
                            w = phi(score) / math.sqrt(i + 1)
                            out[b, h, i] += w * v[b, h, j]
    y = out.transpose(0, 2, 1, 3).reshape(B, T, D)
    return _lin(p, "o_proj", y)


def wave_embedding(p, tokens, *, n_harmonics, start_pos=0, ratio=0.0):
    """WavePacketEmbedding forward (the seed's final version) with explicit loops: (B, T, D)."""
    B, T = tokens.shape
    rows = []
    for b in range(B):
        row = []
        for t in range(T):
            i = tokens[b, t]
            f, ph, A = p["base_freqs"][i], p["phases"][i], p["harmonic_amps"][i]
            pos_phase = (start_pos + t) * p["pos_freq"].reshape(-1)
            sins, coss = [], []
            for w in range(f.shape[0]):
                for n in range(1, n_harmonics + 1):
                    theta = n * f[w] * 2 * math.pi + ph[w] + pos_phase[w]
                    sins.append(A[w, n - 1] * math.sin(theta))
                    coss.append(A[w, n - 1] * math.cos(theta))
            state = np.concatenate([sins, coss, p["phase_scale"] * (ph / math.pi - 1.0), np.log1p(f)])
            e = _lin(p, "wave_to_embed", state[None])[0]
            e = (1 - ratio) * e + ratio * p["simple_embed.weight"][i]
            rms = max(math.sqrt(np.mean(e**2)), 1e-8)
            row.append(e / rms * p["output_scale"])
        rows.append(row)
    return np.asarray(rows)


def qfe(logits, targets, *, lam=0.05, thr=0.01, temperature=1.0, projection=None):
    """physics_optim.py QuantumFieldEntanglementLoss.forward in numpy: (total, ce, coherence)."""
    B, T, V = logits.shape
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    ce = -np.mean(np.take_along_axis(logp, targets[..., None], -1))
    s = logits / temperature
    s = s - s.max(-1, keepdims=True)
    probs = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    if projection is not None:
        out, tgt = probs @ projection, projection[targets]
    else:
        out, tgt = probs, np.eye(V)[targets]
    a, b = np.fft.rfft(out, axis=1), np.fft.rfft(tgt, axis=1)
    mask = (np.abs(a) > thr) & (np.abs(b) > thr)
    loss = np.abs(a) * np.abs(b) * (1 - np.cos(np.angle(a) - np.angle(b))) * mask
    coherence = loss.sum() / (mask.sum() + 1e-8)
    return ce + lam * coherence, ce, coherence


def rgd_steps(params, grads_seq, *, lr, betas=(0.9, 0.999), strength=0.5, warmup=1000, wd=0.01, eps=1e-8):
    """ResonantGradientDescent.step (physics_optim.py) in numpy float64 for a list of gradient dicts."""
    params = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    for step, grads in enumerate(grads_seq, start=1):
        alpha = (min(1.0, step / warmup) if warmup > 0 else 1.0) * strength
        for k, p in params.items():
            g = grads[k]
            p *= 1 - lr * wd
            m[k] = betas[0] * m[k] + (1 - betas[0]) * g
            v2[k] = betas[1] * v2[k] + (1 - betas[1]) * g * g
            u = (m[k] / (1 - betas[0] ** step)) / (np.sqrt(v2[k] / (1 - betas[1] ** step)) + eps)
            if p.ndim >= 2 and alpha > 0:
                W2, U2 = p.reshape(p.shape[0], -1), u.reshape(p.shape[0], -1)
                Wf, Uf = np.fft.fft2(W2), np.fft.fft2(U2)
                Wn = np.abs(Wf) / (np.abs(Wf).max() + eps)
                Un = np.abs(Uf) / (np.abs(Uf).max() + eps)
                rho = alpha * np.sqrt(Wn * Un + eps) + (1 - alpha)
                u = np.fft.ifft2(Uf * rho).real.reshape(p.shape)
            p -= lr * u
    return params
