"""Independent numpy (float64) re-statement of the model that made Wave-Native GPT's headline run:
juan-garassino/spectral_cnn at commit c04e261, spectral_gpt/wave_gpt.py (`WaveGPT`, identical at
38a89ad). Written from that file's formulas with explicit loops over tokens, waves and harmonics;
weights come in as the ORIGINAL model's state_dict names ({name: array}, torch layout), so a test
can copy one set of weights into the original's layout and into physnets and compare logits."""

from __future__ import annotations

import math

import numpy as np


def original_name(physnets_torch_name: str) -> str:
    """The c04e261 WaveGPT state_dict key of a physnets_torch parameter of preset wave_gpt-headline
    (blocks.i.norm1 -> ln1, norm2 -> ln2, mixer -> attn; everything else keeps its name)."""
    parts = physnets_torch_name.split(".")
    renamed = {"norm1": "ln1", "norm2": "ln2", "mixer": "attn"}
    if parts[0] == "blocks":
        parts[2] = renamed.get(parts[2], parts[2])
    return ".".join(parts)


def _linear(sd, name, x):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _layer_norm(sd, name, x, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance, as torch
    return (x - mean) / np.sqrt(var + eps) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # F.gelu default: exact erf form


def embedding(sd, idx):
    """WavePacketEmbedding.forward: (B, T) ids -> (B, T, d), positions 0..T-1."""
    B, T = idx.shape
    freqs, phases, amps = sd["embedding.base_freqs"], sd["embedding.phases"], sd["embedding.harmonic_amps"]
    mults = sd["embedding.harmonic_mults"]  # the buffer 1..H
    pos_freq = sd["embedding.pos_freq"].reshape(-1)
    W, H = amps.shape[1], amps.shape[2]
    ratio = 1.0 / (1.0 + math.exp(-float(sd["embedding.wave_ratio"])))
    out = np.zeros((B, T, sd["embedding.simple_embed.weight"].shape[1]))
    for b in range(B):
        for t in range(T):
            i = idx[b, t]
            sins = np.zeros((W, H))
            coss = np.zeros((W, H))
            for w in range(W):
                for n in range(H):
                    theta = freqs[i, w] * mults[n] * 2 * math.pi + phases[i, w] + t * pos_freq[w]
                    sins[w, n] = amps[i, w, n] * math.sin(theta)
                    coss[w, n] = amps[i, w, n] * math.cos(theta)
            wave = _linear(sd, "embedding.wave_to_embed", np.concatenate([sins.reshape(-1), coss.reshape(-1)]))
            out[b, t] = ratio * wave + (1 - ratio) * sd["embedding.simple_embed.weight"][i]
    return _layer_norm(sd, "embedding.ln", out)


def interference_attention(sd, prefix, x, n_heads):
    """WaveInterferenceAttention.forward (eval): (B, T, d) -> (B, T, d)."""
    B, T, D = x.shape
    W = sd[f"{prefix}.q_phase"].shape[-1]
    hd = D // n_heads
    q = _linear(sd, f"{prefix}.q_proj", x).reshape(B, T, n_heads, W).transpose(0, 2, 1, 3) + sd[f"{prefix}.q_phase"]
    k = _linear(sd, f"{prefix}.k_proj", x).reshape(B, T, n_heads, W).transpose(0, 2, 1, 3) + sd[f"{prefix}.k_phase"]
    v = _linear(sd, f"{prefix}.v_proj", x).reshape(B, T, n_heads, hd).transpose(0, 2, 1, 3)
    q = q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
    k = k / np.maximum(np.linalg.norm(k, axis=-1, keepdims=True), 1e-12)
    temperature = float(np.asarray(sd[f"{prefix}.temperature"]).reshape(-1)[0])
    out = np.zeros((B, n_heads, T, hd))
    for b in range(B):
        for h in range(n_heads):
            for t in range(T):
                scores = np.array([q[b, h, t] @ k[b, h, s] / temperature for s in range(t + 1)])
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                out[b, h, t] = weights @ v[b, h, : t + 1]
    return _linear(sd, f"{prefix}.o_proj", out.transpose(0, 2, 1, 3).reshape(B, T, D))


def logits(sd, idx, n_heads):
    """WaveGPT.forward (eval): ids (B, T) -> logits (B, T, V). Pre-norm blocks, MLP
    fc2(gelu(h) + 0.1 sin(h)), no final LayerNorm: CollapseHead = proj(LayerNorm(x))."""
    x = embedding(sd, idx)
    n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for layer in range(n_layers):
        p = f"blocks.{layer}"
        x = x + interference_attention(sd, f"{p}.attn", _layer_norm(sd, f"{p}.ln1", x), n_heads)
        h = _linear(sd, f"{p}.mlp.fc1", _layer_norm(sd, f"{p}.ln2", x))
        x = x + _linear(sd, f"{p}.mlp.fc2", _gelu(h) + 0.1 * np.sin(h))
    return _linear(sd, "head.proj", _layer_norm(sd, "head.ln", x))


def original_state_dict_shapes(vocab_size, d_model, num_layers, num_heads, num_waves, num_harmonics):
    """{name: shape} of c04e261 WaveGPT's state_dict (parameters and the harmonic_mults buffer)."""
    V, D, W, H = vocab_size, d_model, num_waves, num_harmonics
    shapes = {
        "embedding.base_freqs": (V, W), "embedding.harmonic_mults": (H,), "embedding.harmonic_amps": (V, W, H),
        "embedding.phases": (V, W), "embedding.wave_to_embed.weight": (D, 2 * W * H),
        "embedding.wave_to_embed.bias": (D,), "embedding.pos_freq": (1, 1, W),
        "embedding.simple_embed.weight": (V, D), "embedding.wave_ratio": (), "embedding.ln.weight": (D,),
        "embedding.ln.bias": (D,),
    }
    for i in range(num_layers):
        p = f"blocks.{i}"
        for ln in ("ln1", "ln2"):
            shapes[f"{p}.{ln}.weight"] = shapes[f"{p}.{ln}.bias"] = (D,)
        for proj, n_out in (("q_proj", num_heads * W), ("k_proj", num_heads * W), ("v_proj", D), ("o_proj", D)):
            shapes[f"{p}.attn.{proj}.weight"] = (n_out, D)
            shapes[f"{p}.attn.{proj}.bias"] = (n_out,)
        shapes[f"{p}.attn.q_phase"] = shapes[f"{p}.attn.k_phase"] = (1, num_heads, 1, W)
        shapes[f"{p}.attn.temperature"] = (1,)
        shapes[f"{p}.mlp.fc1.weight"], shapes[f"{p}.mlp.fc1.bias"] = (4 * D, D), (4 * D,)
        shapes[f"{p}.mlp.fc2.weight"], shapes[f"{p}.mlp.fc2.bias"] = (D, 4 * D), (D,)
    shapes.update({"head.ln.weight": (D,), "head.ln.bias": (D,), "head.proj.weight": (V, D), "head.proj.bias": (V,)})
    return shapes
