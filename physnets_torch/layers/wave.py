"""Wave-Native GPT layers, torch twin of physnets_jax/layers/wave.py (same names, same numerics;
formulas in that file's docstrings and docs/wave.md)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from physnets_core.config import ModelConfig
from physnets_torch.layers.dense import dense
from physnets_torch.layers.norm import make_norm
from physnets_torch.ops.linear_attention import causal_linear_attention, feature_map

PHI = (1.0 + math.sqrt(5.0)) / 2.0  # golden ratio
GOLDEN_ANGLE = 2.0 * math.pi / PHI**2


def wave_embedding_init(vocab_size: int, n_waves: int, n_harmonics: int) -> dict[str, np.ndarray]:
    """The seed's physics initialisation (float64 numpy; same as the JAX twin): base_freqs (V, W)
    = log1p(sqrt(i+1)) phi^(0.3 (w - (W-1)/2)), harmonic_amps (V, W, H) = 1/n, phases (V, W) =
    (i + w) golden_angle mod 2 pi."""
    i = np.arange(vocab_size, dtype=np.float64)
    w = np.arange(n_waves, dtype=np.float64)
    centre = np.log1p(1.0 / np.sqrt(1.0 / (i + 1.0)))
    base_freqs = centre[:, None] * (PHI ** ((w - (n_waves - 1) / 2.0) * 0.3))[None, :]
    amps = 1.0 / np.arange(1, n_harmonics + 1, dtype=np.float64)
    harmonic_amps = np.broadcast_to(amps, (vocab_size, n_waves, n_harmonics)).copy()
    phases = np.mod(i[:, None] * GOLDEN_ANGLE + w[None, :] * GOLDEN_ANGLE, 2.0 * math.pi)
    return {"base_freqs": base_freqs, "harmonic_amps": harmonic_amps, "phases": phases}


def _compute_exp_cap(dtype: torch.dtype) -> float:
    log_max = math.log(torch.finfo(dtype).max)
    x = torch.tensor(log_max, dtype=torch.float64).to(dtype)  # rounds to nearest: step down if above
    while float(x) > log_max:
        x = torch.nextafter(x, torch.zeros((), dtype=dtype))
    return float(x)


# computed once, outside any compiled region (forward only looks the value up)
_EXP_CAPS = {d: _compute_exp_cap(d) for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}


def exp_cap(dtype: torch.dtype) -> float:
    """Largest x of `dtype` whose exp is finite in `dtype` (88.72283 in float32, 709.78 in float64):
    the quadratic exp kernel's score is capped there, so only scores whose exp would overflow change."""
    return _EXP_CAPS[dtype] if dtype in _EXP_CAPS else _compute_exp_cap(dtype)


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """x / max(||x||_2, 1e-12) over the last axis."""
    return x / x.square().sum(dim=-1, keepdim=True).clamp_min(1e-24).sqrt()


def blend_embedding_init(vocab_size: int, n_waves: int, n_harmonics: int, generator=None) -> dict[str, torch.Tensor]:
    """The headline version's (c04e261) random init (same distributions as the JAX twin): base_freqs
    (V, W) = linspace(0.5, 5, W) + 0.1 N(0, 1); harmonic_amps (V, W, H) = N(0, 1) 0.5 / sqrt(H W);
    phases (V, W) ~ U(0, 2 pi)."""
    V, W, Hh = vocab_size, n_waves, n_harmonics
    base_freqs = torch.linspace(0.5, 5.0, W)[None, :] + 0.1 * torch.randn(V, W, generator=generator)
    harmonic_amps = torch.randn(V, W, Hh, generator=generator) * (0.5 / math.sqrt(Hh * W))
    phases = torch.rand(V, W, generator=generator) * (2.0 * math.pi)
    return {"base_freqs": base_freqs, "harmonic_amps": harmonic_amps, "phases": phases}


class WavePacketEmbedding(nn.Module):
    """Tokens (B, T) -> wave packets projected to (B, T, n_embd); cfg.wave.embedding picks the
    version, physics or blend (see the JAX twin for both formulas)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        V, W, Hh, D = cfg.vocab_size, cfg.wave.n_waves, cfg.wave.n_harmonics, cfg.n_embd
        self.n_waves, self.n_harmonics = W, Hh
        self.variant = cfg.wave.embedding
        sin_cos = 2 * W * Hh
        if self.variant == "blend":
            init = blend_embedding_init(V, W, Hh)
            self.base_freqs = nn.Parameter(init["base_freqs"])
            self.harmonic_amps = nn.Parameter(init["harmonic_amps"])
            self.phases = nn.Parameter(init["phases"])
            self.wave_to_embed = dense(sin_cos, D, bias=True, std=cfg.init_std)
            self.pos_freq = nn.Parameter(0.1 * torch.randn(1, 1, W))
            self.simple_embed = nn.Embedding(V, D)  # N(0, 1), as the seed
            self.wave_ratio = nn.Parameter(torch.tensor(0.5))
            self.ln = make_norm(cfg)
            return
        init = wave_embedding_init(V, W, Hh)
        self.base_freqs = nn.Parameter(torch.tensor(init["base_freqs"], dtype=torch.float32))
        self.harmonic_amps = nn.Parameter(torch.tensor(init["harmonic_amps"], dtype=torch.float32))
        self.phases = nn.Parameter(torch.tensor(init["phases"], dtype=torch.float32))
        self.wave_to_embed = dense(sin_cos + 2 * W, D, bias=True, std=cfg.init_std)
        with torch.no_grad():
            self.wave_to_embed.weight[:, sin_cos:] *= 10.0
        self.phase_scale = nn.Parameter(torch.ones(1))
        self.pos_freq = nn.Parameter(0.1 * torch.randn(1, 1, W))
        self.simple_embed = nn.Embedding(V, D)
        nn.init.normal_(self.simple_embed.weight, mean=0.0, std=cfg.init_std)
        self.output_scale = nn.Parameter(torch.ones(D))
        # standard-embedding share r (anneal it); a buffer, not in the state_dict
        self.register_buffer("standard_embed_ratio", torch.tensor(cfg.wave.embed_ratio, dtype=torch.float32),
                             persistent=False)

    def forward(self, tokens_BxT: torch.Tensor, start_pos: int = 0) -> torch.Tensor:
        B, T = tokens_BxT.shape
        base_f = self.base_freqs[tokens_BxT]
        phases = self.phases[tokens_BxT]
        amps = self.harmonic_amps[tokens_BxT]
        dtype, device = base_f.dtype, base_f.device
        positions = (start_pos + torch.arange(T, device=device)).to(dtype)
        pos_phase = positions[None, :, None] * self.pos_freq
        harmonics = torch.arange(1, self.n_harmonics + 1, device=device).to(dtype)
        freqs = base_f[..., None] * harmonics
        theta = freqs * 2 * math.pi + phases[..., None] + pos_phase[..., None]
        sin_w = amps * torch.sin(theta)
        cos_w = amps * torch.cos(theta)
        if self.variant == "blend":
            wave = self.wave_to_embed(torch.cat([sin_w.reshape(B, T, -1), cos_w.reshape(B, T, -1)], dim=-1))
            s = torch.sigmoid(self.wave_ratio)
            return self.ln(s * wave + (1.0 - s) * self.simple_embed(tokens_BxT))
        phase_direct = self.phase_scale * (phases / math.pi - 1.0)
        freq_direct = torch.log1p(base_f)
        state = torch.cat([sin_w.reshape(B, T, -1), cos_w.reshape(B, T, -1), phase_direct, freq_direct], dim=-1)
        e = self.wave_to_embed(state)
        r = self.standard_embed_ratio.to(e.dtype)
        e = (1.0 - r) * e + r * self.simple_embed(tokens_BxT)
        ms = e.square().mean(dim=-1, keepdim=True)
        return e / ms.clamp_min(1e-16).sqrt() * self.output_scale


def _visible(q_pos_T: torch.Tensor, S: int) -> torch.Tensor:
    k_pos = torch.arange(S, device=q_pos_T.device)
    return k_pos[None, :] <= q_pos_T[:, None]


class WaveAttention(nn.Module):
    """mixer='wave' (variants interference / physics / pure; see the JAX twin): (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.cfg = cfg
        D, H, W = cfg.n_embd, cfg.n_head, cfg.wave.n_waves
        self.variant = cfg.wave.attention
        self.kernel_name = "linear" if cfg.wave.kernel == "identity" else cfg.wave.kernel
        self.mode = cfg.wave.mode

        def lin(n_out):
            return dense(D, n_out, bias=cfg.bias, std=cfg.init_std)

        if self.variant == "interference":
            self.q_proj, self.k_proj = lin(H * W), lin(H * W)
            self.q_phase = nn.Parameter(torch.zeros(1, H, 1, W))
            self.k_phase = nn.Parameter(torch.zeros(1, H, 1, W))
            self.temperature = nn.Parameter(torch.full((1,), W**0.5))
        elif self.variant == "physics":
            self.freq_proj, self.phase_proj, self.amp_proj = lin(H * W), lin(H * W), lin(H * W)
            self.temperature = nn.Parameter(torch.ones(1))
        else:
            self.q_freq, self.k_freq = lin(H * W), lin(H * W)
            self.q_phase, self.k_phase = lin(H * W), lin(H * W)
            if self.mode == "quadratic" or self.kernel_name == "linear":  # unused otherwise
                self.interference_scale = nn.Parameter(torch.ones(H, 1, 1))
        self.v_proj = lin(D)
        self.o_proj = dense(D, D, bias=cfg.bias, std=cfg.residual_init_std)
        self.attn_drop = nn.Dropout(cfg.dropout)

    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict:
        """Empty decoding cache (same keys and shapes as the JAX twin)."""
        H, W, hd = self.cfg.n_head, self.cfg.wave.n_waves, self.cfg.head_size
        pos = torch.zeros((), dtype=torch.int32, device=device)

        def z(*shape):
            return torch.zeros(shape, dtype=dtype, device=device)

        if self.variant == "pure" and self.mode == "linear":
            return {"S": z(batch, H, W, hd), "z": z(batch, H, W), "pos": pos}
        if self.variant == "physics":
            return {"amp_sq": z(batch, H, max_len), "phasor_re": z(batch, H, max_len),
                    "phasor_im": z(batch, H, max_len), "v": z(batch, H, max_len, hd), "pos": pos}
        return {"k": z(batch, H, max_len, W), "v": z(batch, H, max_len, hd), "pos": pos}

    def _heads(self, y: torch.Tensor) -> torch.Tensor:
        return rearrange(y, "b t (h w) -> b h t w", h=self.cfg.n_head)

    def forward(self, x_BxTxD: torch.Tensor, cache=None):
        B, T, _ = x_BxTxD.shape
        pos0 = 0 if cache is None else int(cache["pos"])
        q_pos = pos0 + torch.arange(T, device=x_BxTxD.device)
        t_pos = q_pos.to(x_BxTxD.dtype)[None, None, :, None]
        v = self._heads(self.v_proj(x_BxTxD))
        new_cache = None
        if self.variant == "interference":
            q = _l2_normalize(self._heads(self.q_proj(x_BxTxD)) + self.q_phase)
            k = _l2_normalize(self._heads(self.k_proj(x_BxTxD)) + self.k_phase)
            full, new_cache = self._kv(cache, {"k": k, "v": v}, pos0, T)
            scores = torch.einsum("bhtw,bhsw->bhts", q, full["k"]) / self.temperature
            out = self._softmax_attend(scores, q_pos, full["v"])
        elif self.variant == "physics":
            theta = self._heads(self.freq_proj(x_BxTxD)) * t_pos + self._heads(self.phase_proj(x_BxTxD))
            amp = F.softplus(self._heads(self.amp_proj(x_BxTxD))) + 1e-8
            new = {
                "amp_sq": (amp**2).sum(dim=-1),
                "phasor_re": (amp * torch.cos(theta)).sum(dim=-1),
                "phasor_im": (amp * torch.sin(theta)).sum(dim=-1),
                "v": v,
            }
            full, new_cache = self._kv(cache, new, pos0, T)
            cross = new["phasor_re"][..., :, None] * full["phasor_re"][..., None, :] + (
                new["phasor_im"][..., :, None] * full["phasor_im"][..., None, :]
            )
            intensity = new["amp_sq"][..., :, None] + full["amp_sq"][..., None, :] + 2 * cross
            scores = intensity * self.temperature / (self.cfg.wave.n_waves**0.5)
            out = self._softmax_attend(scores, q_pos, full["v"])
        else:
            out, new_cache = self._pure(x_BxTxD, v, t_pos, q_pos, pos0, cache)
        y = self.o_proj(rearrange(out, "b h t d -> b t (h d)"))
        return y if cache is None else (y, new_cache)

    def _softmax_attend(self, scores, q_pos, v):
        scores = scores.masked_fill(~_visible(q_pos, scores.shape[-1]), float("-inf"))
        weights = self.attn_drop(torch.softmax(scores, dim=-1))
        return torch.einsum("bhts,bhsd->bhtd", weights, v)

    def _kv(self, cache, new: dict, pos0: int, T: int):
        """Without a cache: (new, None). With one: write new in place at pos0, return the filled
        prefix of every buffer and the cache (sharing the buffers)."""
        if cache is None:
            return new, None
        batch, max_len = cache["v"].shape[0], cache["v"].shape[2]
        if batch != new["v"].shape[0]:
            raise ValueError(f"cache was made for batch {batch}, input has batch {new['v'].shape[0]}")
        if pos0 + T > max_len:
            raise ValueError(f"cache holds {max_len} positions; pos {pos0} + {T} new tokens overflow it")
        full = {}
        for key, value in new.items():
            cache[key][:, :, pos0 : pos0 + T] = value.to(cache[key].dtype)
            full[key] = cache[key][:, :, : pos0 + T]
        return full, {**{k: cache[k] for k in new}, "pos": cache["pos"] + T}

    def _pure(self, x_BxTxD, v, t_pos, q_pos, pos0, cache):
        scale = self.cfg.wave.n_waves**0.25
        q = torch.sin(self._heads(self.q_freq(x_BxTxD)) * t_pos + self._heads(self.q_phase(x_BxTxD)))
        k = torch.sin(self._heads(self.k_freq(x_BxTxD)) * t_pos + self._heads(self.k_phase(x_BxTxD)))
        q = _l2_normalize(q) * scale
        k = _l2_normalize(k) * scale
        count = (q_pos + 1).to(x_BxTxD.dtype)[None, None, :, None]
        T = q.shape[2]
        if self.mode == "linear":
            state = None if cache is None else (cache["S"].to(q.dtype), cache["z"].to(q.dtype))
            if self.kernel_name == "linear":
                out, (S, z) = causal_linear_attention(
                    q, k, v, normalize=False, chunk_size=self.cfg.wave.chunk_size, state=state, return_state=True
                )
                out = out * self.interference_scale / count.sqrt()
            else:
                qf, kf = feature_map(q, self.kernel_name), feature_map(k, self.kernel_name)
                out, (S, z) = causal_linear_attention(
                    qf, kf, v, normalize=True, eps=1e-6, chunk_size=self.cfg.wave.chunk_size, state=state,
                    return_state=True,
                )
            new_cache = None
            if cache is not None:
                new_cache = {"S": S.detach(), "z": z.detach(), "pos": cache["pos"] + T}
            return out, new_cache
        full, new_cache = self._kv(cache, {"k": k, "v": v}, pos0, T)
        scores = torch.einsum("bhtw,bhsw->bhts", q, full["k"]) * self.interference_scale
        if self.kernel_name == "exp":
            scores = scores.clamp_max(exp_cap(scores.dtype))
        weights = feature_map(scores, self.kernel_name)
        mask = _visible(q_pos, scores.shape[-1])
        weights = torch.where(mask, weights, torch.zeros((), dtype=weights.dtype, device=weights.device))
        weights = self.attn_drop(weights / count.sqrt())
        return torch.einsum("bhts,bhsd->bhtd", weights, full["v"]), new_cache


def wave_activation(x: torch.Tensor, kind: str = "sin") -> torch.Tensor:
    """sin: sin(x) + 0.1 x; gelu_sin: gelu(x) + 0.1 sin(x) (exact erf GELU)."""
    if kind == "sin":
        return torch.sin(x) + 0.1 * x
    if kind == "gelu_sin":
        return F.gelu(x) + 0.1 * torch.sin(x)
    raise ValueError(f"wave_activation={kind!r} is not known; valid choices: sin, gelu_sin")


class WaveMLP(nn.Module):
    """mlp='wave': dropout(fc2(dropout(act(fc1(x))))): (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.kind = cfg.wave.activation
        self.fc1 = dense(cfg.n_embd, cfg.mlp_width, bias=cfg.mlp_bias, std=cfg.init_std)
        self.fc2 = dense(cfg.mlp_width, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(wave_activation(self.fc1(x_BxTxD), self.kind))))


class WaveCollapseHead(nn.Module):
    """head='wave_collapse': logits = proj(norm(x)), proj with bias: (B, T, D) -> (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln = make_norm(cfg)
        self.proj = dense(cfg.n_embd, cfg.vocab_size, bias=cfg.bias, std=cfg.init_std)

    def forward(self, x_BxTxD: torch.Tensor) -> torch.Tensor:
        return self.proj(self.ln(x_BxTxD))
