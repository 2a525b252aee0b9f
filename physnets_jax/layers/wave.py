"""Wave-Native GPT layers (juan-garassino/spectral_cnn, spectral_gpt/wave_gpt.py): the wave-packet
embedding, the wave attention mixers (interference / physics / pure), the wave MLP and the
wave-collapse head. Shapes are (B, T, n_embd) at module boundaries; W = n_waves, H = n_head
(or n_harmonics where said). docs/wave.md lists every formula and where it deviates from the seed.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange
from flax import nnx

from physnets_core.config import ModelConfig
from physnets_jax.layers.attention import attend_with_cache
from physnets_jax.layers.dense import dense
from physnets_jax.layers.dropout import Dropout
from physnets_jax.layers.embedding import Embed
from physnets_jax.layers.mlp import ACTIVATIONS, apply_mlp
from physnets_jax.layers.norm import make_norm
from physnets_jax.ops import trig
from physnets_jax.ops.linear_attention import causal_linear_attention, feature_map

PHI = (1.0 + math.sqrt(5.0)) / 2.0  # golden ratio
GOLDEN_ANGLE = 2.0 * math.pi / PHI**2  # ~137.5 degrees


def wave_embedding_init(vocab_size: int, n_waves: int, n_harmonics: int) -> dict[str, np.ndarray]:
    """The seed's physics initialisation (float64 numpy): base_freqs (V, W), harmonic_amps (V, W, H),
    phases (V, W).

    mass_i = 1/(i+1); centre_i = log1p(1/sqrt(mass_i)); base_freqs[i, w] = centre_i *
    phi^(0.3 (w - (W-1)/2)); harmonic_amps[i, w, n-1] = 1/n; phases[i, w] = (i + w) * golden_angle
    mod 2 pi.
    """
    i = np.arange(vocab_size, dtype=np.float64)
    w = np.arange(n_waves, dtype=np.float64)
    mass = 1.0 / (i + 1.0)
    centre = np.log1p(1.0 / np.sqrt(mass))
    spread = PHI ** ((w - (n_waves - 1) / 2.0) * 0.3)
    base_freqs = centre[:, None] * spread[None, :]
    amps = 1.0 / np.arange(1, n_harmonics + 1, dtype=np.float64)
    harmonic_amps = np.broadcast_to(amps, (vocab_size, n_waves, n_harmonics)).copy()
    phases = np.mod(i[:, None] * GOLDEN_ANGLE + w[None, :] * GOLDEN_ANGLE, 2.0 * math.pi)
    return {"base_freqs": base_freqs, "harmonic_amps": harmonic_amps, "phases": phases}


class EmbedBlend(nnx.Variable):
    """Non-trained state: the standard-embedding share r of WavePacketEmbedding (anneal it)."""


def _l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||_2, 1e-12) over the last axis (torch F.normalize), with a finite gradient at 0."""
    sq = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x / jnp.sqrt(jnp.maximum(sq, 1e-24))


def blend_embedding_init(key: jax.Array, vocab_size: int, n_waves: int, n_harmonics: int, dtype=jnp.float32):
    """The headline version's (c04e261) random init: base_freqs (V, W) = linspace(0.5, 5, W) +
    0.1 N(0, 1); harmonic_amps (V, W, H) = N(0, 1) 0.5 / sqrt(H W); phases (V, W) ~ U(0, 2 pi)."""
    k_f, k_a, k_p = jax.random.split(key, 3)
    V, W, Hh = vocab_size, n_waves, n_harmonics
    base_freqs = jnp.linspace(0.5, 5.0, W, dtype=dtype)[None, :] + 0.1 * jax.random.normal(k_f, (V, W), dtype)
    harmonic_amps = jax.random.normal(k_a, (V, W, Hh), dtype) * (0.5 / math.sqrt(Hh * W))
    phases = jax.random.uniform(k_p, (V, W), dtype, 0.0, 2.0 * math.pi)
    return {"base_freqs": base_freqs, "harmonic_amps": harmonic_amps, "phases": phases}


class WavePacketEmbedding(nnx.Module):
    """Tokens (B, T) -> wave packets projected to (B, T, n_embd); cfg.wave.embedding picks the version.

    For token i at absolute position t, waves w = 1..W and harmonics n = 1..H:
      theta = 2 pi n f[i, w] + phase[i, w] + t pos_freq[w]
    physics (preset wave_gpt, physics init from wave_embedding_init):
      state = [A[i, w, n] sin theta, A[i, w, n] cos theta  (2 W H, w-major),
               phase_scale (phase[i, w] / pi - 1)           (W, direct phase pathway),
               log1p(f[i, w])                               (W, direct frequency pathway)]
      e = wave_to_embed(state);  e = (1 - r) e + r simple_embed[i]  (r = standard_embed_ratio)
      out = e / max(rms(e), 1e-8) * output_scale
    blend (preset wave_gpt-headline, the c04e261 version, random init from blend_embedding_init):
      state = [A sin theta, A cos theta]  (2 W H, w-major);  s = sigmoid(wave_ratio), wave_ratio init 0.5
      out = LayerNorm(s wave_to_embed(state) + (1 - s) simple_embed[i]),  simple_embed ~ N(0, 1)
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        V, W, Hh, D = cfg.vocab_size, cfg.wave.n_waves, cfg.wave.n_harmonics, cfg.n_embd
        self.n_waves, self.n_harmonics = W, Hh
        self.variant = cfg.wave.embedding
        sin_cos = 2 * W * Hh
        if self.variant == "blend":
            init = blend_embedding_init(rngs.params(), V, W, Hh)
            self.base_freqs = nnx.Param(init["base_freqs"])
            self.harmonic_amps = nnx.Param(init["harmonic_amps"])
            self.phases = nnx.Param(init["phases"])
            self.wave_to_embed = dense(sin_cos, D, bias=True, std=cfg.init_std, rngs=rngs)
            self.pos_freq = nnx.Param(0.1 * jax.random.normal(rngs.params(), (1, 1, W)))
            self.simple_embed = Embed(V, D, 1.0, rngs)  # torch nn.Embedding's N(0, 1), as the seed
            self.wave_ratio = nnx.Param(jnp.asarray(0.5, jnp.float32))
            self.ln = make_norm(cfg, rngs=rngs)
            return
        init = wave_embedding_init(V, W, Hh)
        self.base_freqs = nnx.Param(jnp.asarray(init["base_freqs"], jnp.float32))
        self.harmonic_amps = nnx.Param(jnp.asarray(init["harmonic_amps"], jnp.float32))
        self.phases = nnx.Param(jnp.asarray(init["phases"], jnp.float32))
        self.wave_to_embed = dense(sin_cos + 2 * W, D, bias=True, std=cfg.init_std, rngs=rngs)
        # the phase/frequency pathways (last 2W inputs) start 10x larger (seed's intent, see docs)
        kernel = self.wave_to_embed.kernel[...]
        self.wave_to_embed.kernel[...] = kernel.at[sin_cos:].multiply(10.0)
        self.phase_scale = nnx.Param(jnp.ones((1,)))
        self.pos_freq = nnx.Param(0.1 * jax.random.normal(rngs.params(), (1, 1, W)))
        self.simple_embed = Embed(V, D, cfg.init_std, rngs)
        self.output_scale = nnx.Param(jnp.ones((D,)))
        self.standard_embed_ratio = EmbedBlend(jnp.asarray(cfg.wave.embed_ratio, jnp.float32))

    def __call__(self, tokens_BxT: jax.Array, start_pos: jax.Array | int = 0) -> jax.Array:
        B, T = tokens_BxT.shape
        base_f = jnp.take(self.base_freqs[...], tokens_BxT, axis=0)  # (B, T, W)
        phases = jnp.take(self.phases[...], tokens_BxT, axis=0)  # (B, T, W)
        amps = jnp.take(self.harmonic_amps[...], tokens_BxT, axis=0)  # (B, T, W, Hh)
        dtype = base_f.dtype
        positions = (start_pos + jnp.arange(T)).astype(dtype)
        pos_phase = positions[None, :, None] * self.pos_freq[...]  # (1, T, W)
        harmonics = jnp.arange(1, self.n_harmonics + 1, dtype=dtype)
        freqs = base_f[..., None] * harmonics  # (B, T, W, Hh)
        theta = freqs * 2 * math.pi + phases[..., None] + pos_phase[..., None]
        sin_w = amps * trig.sin(theta)
        cos_w = amps * trig.cos(theta)
        if self.variant == "blend":
            wave = self.wave_to_embed(jnp.concatenate([sin_w.reshape(B, T, -1), cos_w.reshape(B, T, -1)], axis=-1))
            s = jax.nn.sigmoid(self.wave_ratio[...]).astype(wave.dtype)
            return self.ln(s * wave + (1.0 - s) * self.simple_embed(tokens_BxT))
        phase_direct = self.phase_scale[...] * (phases / math.pi - 1.0)
        freq_direct = jnp.log1p(base_f)
        state = jnp.concatenate(
            [sin_w.reshape(B, T, -1), cos_w.reshape(B, T, -1), phase_direct, freq_direct], axis=-1
        )
        e = self.wave_to_embed(state)
        r = self.standard_embed_ratio[...].astype(e.dtype)
        e = (1.0 - r) * e + r * self.simple_embed(tokens_BxT)
        ms = jnp.mean(jnp.square(e), axis=-1, keepdims=True)
        return e / jnp.sqrt(jnp.maximum(ms, 1e-16)) * self.output_scale[...]


def _visible(q_pos_T: jax.Array, S: int, kv_len) -> jax.Array:
    """(T, S) mask: key s visible from query position q_pos[t] when s <= q_pos[t] and s < kv_len."""
    k_pos = jnp.arange(S)
    vis = k_pos[None, :] <= q_pos_T[:, None]
    if kv_len is not None:
        vis = vis & (k_pos < kv_len)[None, :]
    return vis


def _softmax_attend(scores_BxHxTxS, visible_TxS, v_BxHxSxD, dropout):
    scores = jnp.where(visible_TxS, scores_BxHxTxS, -jnp.inf)
    weights = dropout(jax.nn.softmax(scores, axis=-1))
    return jnp.einsum("bhts,bhsd->bhtd", weights, v_BxHxSxD)


def _write(cache_arr: jax.Array, new: jax.Array, pos: jax.Array) -> jax.Array:
    """cache_arr (B, H, L, ...) with new (B, H, T, ...) written at position pos along axis 2."""
    zero = jnp.zeros_like(pos)
    index = (zero, zero, pos) + (zero,) * (cache_arr.ndim - 3)
    return jax.lax.dynamic_update_slice(cache_arr, new.astype(cache_arr.dtype), index)


@functools.lru_cache(maxsize=8)
def _exp_cap(dtype: np.dtype) -> float:
    log_max = math.log(float(np.finfo(dtype).max))
    x = dtype.type(log_max)  # rounds to nearest: step down if that is above log(max)
    while float(x) > log_max:
        x = np.nextafter(x, dtype.type(0))
    return float(x)


def exp_cap(dtype) -> float:
    """Largest x of `dtype` whose exp is finite in `dtype` (88.72283 in float32, 709.78 in float64):
    the quadratic exp kernel's score is capped there, so only scores whose exp would overflow change."""
    return _exp_cap(np.dtype(dtype))


class WaveAttention(nnx.Module):
    """mixer='wave': (B, T, n_embd) -> (B, T, n_embd), causal; cfg.wave.attention picks the variant.

    interference (seed WaveInterferenceAttention): q = q_proj(x) + q_phase, k likewise (W per head),
      a_ts = softmax_s( q_t/|q_t| . k_s/|k_s| / temperature ), temperature init sqrt(W).
    physics (seed InterferenceAttention): theta = freq_proj(x) t + phase_proj(x), A = softplus(amp_proj(x))
      + 1e-8; I_ts = sum A_t^2 + sum A_s^2 + 2 Re(P_t conj P_s), P = sum_w A e^{i theta};
      a_ts = softmax_s( I_ts temperature / sqrt(W) ), temperature init 1.
    pure (seed PureWaveAttention, no softmax): q = sin(q_freq(x) t + q_phase(x)), k likewise,
      q, k <- W^0.25 q/|q|, W^0.25 k/|k|;
      quadratic: out_t = sum_{s<=t} phi(g_h q_t.k_s) v_s / sqrt(t+1), g_h = interference_scale,
        phi = cfg.wave.kernel applied to the score (exp: the score capped at exp_cap(dtype), where
        exp would overflow);
      linear: out_t = phi(q_t).sum_s phi(k_s) v_s^T / (phi(q_t).sum_s phi(k_s) + 1e-6), chunked;
        the linear (identity) kernel computes the quadratic identity result exactly, in O(T).
    Then o_proj. t is the absolute position (cache-aware).
    """

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, H, W = cfg.n_embd, cfg.n_head, cfg.wave.n_waves
        self.variant = cfg.wave.attention
        self.kernel_name = "linear" if cfg.wave.kernel == "identity" else cfg.wave.kernel
        self.mode = cfg.wave.mode

        def lin(n_out):
            return dense(D, n_out, bias=cfg.bias, std=cfg.init_std, rngs=rngs)

        if self.variant == "interference":
            self.q_proj, self.k_proj = lin(H * W), lin(H * W)
            self.q_phase = nnx.Param(jnp.zeros((1, H, 1, W)))
            self.k_phase = nnx.Param(jnp.zeros((1, H, 1, W)))
            self.temperature = nnx.Param(jnp.full((1,), W**0.5, jnp.float32))
        elif self.variant == "physics":
            self.freq_proj, self.phase_proj, self.amp_proj = lin(H * W), lin(H * W), lin(H * W)
            self.temperature = nnx.Param(jnp.ones((1,)))
        else:
            self.q_freq, self.k_freq = lin(H * W), lin(H * W)
            self.q_phase, self.k_phase = lin(H * W), lin(H * W)
            if self.mode == "quadratic" or self.kernel_name == "linear":  # unused otherwise
                self.interference_scale = nnx.Param(jnp.ones((H, 1, 1)))
        self.v_proj = lin(D)
        self.o_proj = dense(D, D, bias=cfg.bias, std=cfg.residual_init_std, rngs=rngs)
        self.attn_drop = Dropout(cfg.dropout, rngs=rngs)

    # -- cache ---------------------------------------------------------------------------------
    def init_cache(self, batch: int, max_len: int, dtype, device=None) -> dict[str, jax.Array]:
        """Empty decoding cache; keys depend on the variant (same keys/shapes as the torch twin)."""
        H, W, hd = self.cfg.n_head, self.cfg.wave.n_waves, self.cfg.head_size
        pos = jnp.zeros((), jnp.int32, device=device)
        if self.variant == "pure" and self.mode == "linear":
            return {"S": jnp.zeros((batch, H, W, hd), dtype, device=device), "z": jnp.zeros((batch, H, W), dtype, device=device), "pos": pos}
        v = jnp.zeros((batch, H, max_len, hd), dtype, device=device)
        if self.variant == "physics":
            z = jnp.zeros((batch, H, max_len), dtype, device=device)
            return {"amp_sq": z, "phasor_re": z, "phasor_im": z, "v": v, "pos": pos}
        return {"k": jnp.zeros((batch, H, max_len, W), dtype, device=device), "v": v, "pos": pos}

    def _heads(self, y_BxTxHW: jax.Array) -> jax.Array:
        return rearrange(y_BxTxHW, "b t (h w) -> b h t w", h=self.cfg.n_head)

    def __call__(self, x_BxTxD: jax.Array, cache=None):
        B, T, _ = x_BxTxD.shape
        pos0 = jnp.zeros((), jnp.int32) if cache is None else cache["pos"]
        q_pos = pos0 + jnp.arange(T)
        t_pos = q_pos.astype(x_BxTxD.dtype)[None, None, :, None]  # (1, 1, T, 1)
        v = self._heads(self.v_proj(x_BxTxD))  # (B, H, T, hd)
        new_cache = None
        if self.variant == "interference":
            q = _l2_normalize(self._heads(self.q_proj(x_BxTxD)) + self.q_phase[...])
            k = _l2_normalize(self._heads(self.k_proj(x_BxTxD)) + self.k_phase[...])
            if cache is None:
                # softmax(q.k / temperature) = softmax(q'.k / sqrt(W)) with q' = q sqrt(W) / temperature:
                # the hand-written causal attention (query tiles, no stacked (T, T) residuals)
                q = q * (self.cfg.wave.n_waves**0.5 / self.temperature[...])
                out, _ = attend_with_cache(q, k, v, None, weights_dropout=self.attn_drop)
            else:
                k_all, v_all, kv_len, new_cache = self._kv(cache, {"k": k, "v": v}, pos0, T)
                scores = jnp.einsum("bhtw,bhsw->bhts", q, k_all["k"]) / self.temperature[...]
                out = _softmax_attend(scores, _visible(q_pos, scores.shape[-1], kv_len), v_all, self.attn_drop)
        elif self.variant == "physics":
            theta = self._heads(self.freq_proj(x_BxTxD)) * t_pos + self._heads(self.phase_proj(x_BxTxD))
            amp = jax.nn.softplus(self._heads(self.amp_proj(x_BxTxD))) + 1e-8
            new = {
                "amp_sq": jnp.sum(amp**2, axis=-1),
                "phasor_re": jnp.sum(amp * trig.cos(theta), axis=-1),
                "phasor_im": jnp.sum(amp * trig.sin(theta), axis=-1),
                "v": v,
            }
            k_all, v_all, kv_len, new_cache = self._kv(cache, new, pos0, T)
            cross = new["phasor_re"][..., :, None] * k_all["phasor_re"][..., None, :] + (
                new["phasor_im"][..., :, None] * k_all["phasor_im"][..., None, :]
            )
            intensity = new["amp_sq"][..., :, None] + k_all["amp_sq"][..., None, :] + 2 * cross
            scores = intensity * self.temperature[...] / (self.cfg.wave.n_waves**0.5)
            out = _softmax_attend(scores, _visible(q_pos, scores.shape[-1], kv_len), v_all, self.attn_drop)
        else:
            out, new_cache = self._pure(x_BxTxD, v, t_pos, q_pos, pos0, cache)
        y = self.o_proj(rearrange(out, "b h t d -> b t (h d)"))
        return y if cache is None else (y, new_cache)

    def _kv(self, cache, new: dict, pos0, T):
        """Without a cache: (new, new['v'], None, None). With one: write new at pos0 and return the
        full buffers, the filled length and the updated cache."""
        if cache is None:
            return new, new["v"], None, None
        if cache["v"].shape[0] != new["v"].shape[0]:
            raise ValueError(f"cache was made for batch {cache['v'].shape[0]}, input has batch {new['v'].shape[0]}")
        full = {key: _write(cache[key], value, pos0) for key, value in new.items()}
        return full, full["v"], pos0 + T, {**full, "pos": pos0 + T}

    def _pure(self, x_BxTxD, v, t_pos, q_pos, pos0, cache):
        projections = [self._heads(p(x_BxTxD)) for p in (self.q_freq, self.q_phase, self.k_freq, self.k_phase)]
        count = (q_pos + 1).astype(x_BxTxD.dtype)[None, None, :, None]  # positions attended
        if self.mode == "linear":
            state = None if cache is None else (cache["S"], cache["z"])
            gain = self.interference_scale[...] / jnp.sqrt(count) if self.kernel_name == "linear" else None
            out, (S, z) = _pure_linear_attention(*projections, v, t_pos, gain, state, self.kernel_name,
                                                 self.cfg.wave.chunk_size)
            new_cache = None if cache is None else {"S": S, "z": z, "pos": pos0 + v.shape[2]}
            return out, new_cache
        q, k = _wave_query_key(*projections, t_pos)
        k_all, v_all, kv_len, new_cache = self._kv(cache, {"k": k, "v": v}, pos0, q.shape[2])
        scores = jnp.einsum("bhtw,bhsw->bhts", q, k_all["k"]) * self.interference_scale[...]
        if self.kernel_name == "exp":
            scores = jnp.minimum(scores, exp_cap(scores.dtype))
        weights = feature_map(scores, self.kernel_name)
        weights = jnp.where(_visible(q_pos, scores.shape[-1], kv_len), weights, 0.0)
        weights = self.attn_drop(weights / jnp.sqrt(count))
        return jnp.einsum("bhts,bhsd->bhtd", weights, v_all), new_cache


def _wave_query_key(q_freq, q_phase, k_freq, k_phase, t_pos):
    """Pure wave queries and keys (B, H, T, W) from the projections (B, H, T, W):
    W^0.25 * unit(sin(freq * t + phase))."""
    scale = q_freq.shape[-1] ** 0.25
    q = _l2_normalize(trig.sin(q_freq * t_pos + q_phase)) * scale
    k = _l2_normalize(trig.sin(k_freq * t_pos + k_phase)) * scale
    return q, k


@functools.partial(jax.checkpoint, static_argnums=(8, 9))
def _pure_linear_attention(q_freq, q_phase, k_freq, k_phase, v, t_pos, gain, state, kernel_name, chunk_size):
    """Pure wave attention in linear mode from the four projections (B, H, T, W) and v (B, H, T, hd):
    (out (B, H, T, hd), (S, z)). Rematerialised in the backward: under jax.grad of the layer
    scan XLA stacked some twenty (B, H, T, W)-sized intermediates of sin, the normalisation and the
    feature map per layer; recomputing them is cheaper (a wave_gpt+linear-small step on CPU: -8%)."""
    q, k = _wave_query_key(q_freq, q_phase, k_freq, k_phase, t_pos)
    if kernel_name == "linear":
        # identity kernel: exactly the quadratic identity result g_h (q_t . k_s) / sqrt(t+1)
        out, new_state = causal_linear_attention(q, k, v, normalize=False, chunk_size=chunk_size, state=state,
                                                 return_state=True)
        return out * gain, new_state
    qf, kf = feature_map(q, kernel_name), feature_map(k, kernel_name)
    return causal_linear_attention(qf, kf, v, normalize=True, eps=1e-6, chunk_size=chunk_size, state=state,
                                   return_state=True)


def wave_activation(x: jax.Array, kind: str = "sin") -> jax.Array:
    """sin: sin(x) + 0.1 x (the seed's README/paper); gelu_sin: gelu(x) + 0.1 sin(x) (its code)."""
    if kind not in ("sin", "gelu_sin"):
        raise ValueError(f"wave_activation={kind!r} is not known; valid choices: sin, gelu_sin")
    return ACTIVATIONS[kind](x)


class WaveMLP(nnx.Module):
    """mlp='wave': dropout(fc2(dropout(act(fc1(x))))), act = wave_activation: (B, T, D) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, *, rngs: nnx.Rngs):
        self.kind = cfg.wave.activation
        self.fc1 = dense(cfg.n_embd, cfg.mlp_width, bias=cfg.mlp_bias, std=cfg.init_std, rngs=rngs)
        self.fc2 = dense(cfg.mlp_width, cfg.n_embd, bias=cfg.mlp_bias, std=cfg.residual_init_std, rngs=rngs)
        self.drop = Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        if self.drop.rngs is None or self.drop.broadcast_dims:
            return self.drop(self.fc2(self.drop(wave_activation(self.fc1(x_BxTxD), self.kind))))
        # mlp_core: the same function (the inner dropout's mask is the next draw of self.drop's
        # stream, as in the line above) with a backward that keeps u and the bool mask only
        return self.drop(apply_mlp(self.kind, self.fc1, self.fc2, x_BxTxD, hidden_dropout=self.drop))


class WaveCollapseHead(nnx.Module):
    """head='wave_collapse' (seed CollapseHead): logits = proj(norm(x)), proj with bias: (B, T, D) -> (B, T, V)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.ln = make_norm(cfg, rngs=rngs)
        self.proj = dense(cfg.n_embd, cfg.vocab_size, bias=cfg.bias, std=cfg.init_std, rngs=rngs)

    def __call__(self, x_BxTxD: jax.Array) -> jax.Array:
        return self.proj(self.ln(x_BxTxD))
