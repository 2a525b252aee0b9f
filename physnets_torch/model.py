"""The composable decoder-only LM: embedding -> n_layer x Block -> final norm -> head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from physnets_core.config import ModelConfig, preset
from physnets_torch import layers
from physnets_torch.layers.norm import make_norm


class Block(nn.Module):
    """Pre-norm: x = res1(x, mixer(norm1(x))); x = res2(x, mlp(norm2(x))). Post-norm applies
    the norm after each residual instead: x = norm1(res1(x, mixer(x)))."""

    def __init__(self, cfg: ModelConfig, layer_idx: int):
        super().__init__()
        self.prenorm = cfg.prenorm
        self.norm1 = make_norm(cfg)
        self.mixer = layers.MIXERS[cfg.mixer](cfg, layer_idx)
        self.res1 = layers.RESIDUALS[cfg.residual](cfg, layer_idx)
        self.norm2 = make_norm(cfg)
        self.mlp = layers.MLPS[cfg.mlp](cfg, layer_idx)
        self.res2 = layers.RESIDUALS[cfg.residual](cfg, layer_idx)

    def forward(self, x_BxTxD: torch.Tensor, cache=None):
        """(B, T, D) -> (B, T, D); with a mixer cache returns (y, new_cache)."""
        mixer_in = self.norm1(x_BxTxD) if self.prenorm else x_BxTxD
        mixed = self.mixer(mixer_in) if cache is None else self.mixer(mixer_in, cache=cache)
        if cache is not None:
            mixed, cache = mixed
        x = self.res1(x_BxTxD, mixed)
        if not self.prenorm:
            x = self.norm1(x)
        mlp_in = self.norm2(x) if self.prenorm else x
        x = self.res2(x, self.mlp(mlp_in))
        if not self.prenorm:
            x = self.norm2(x)
        return x if cache is None else (x, cache)


class Decoder(nn.Module):
    """Decoder-only LM: tokens (B, T) int -> logits (B, T, vocab_size)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embedding = layers.EMBEDDINGS[cfg.embedding](cfg)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layer)])
        self.norm_f = make_norm(cfg) if cfg.prenorm and cfg.final_norm else None
        self.head = None if cfg.tie_embeddings else layers.HEADS[cfg.head](cfg)

    def init_cache(self, batch: int, max_len: int, dtype=None, device=None) -> dict[str, Any]:
        """Empty decoding cache for `max_len` positions: {'pos': int, 'layers': [per block]}."""
        if not self.cfg.extrapolates and max_len > self.cfg.block_size:
            raise ValueError(
                f"max_len={max_len} exceeds block_size={self.cfg.block_size}: "
                f"embedding={self.cfg.embedding!r} has no positions beyond block_size"
            )
        param = next(self.parameters())
        dtype = param.dtype if dtype is None else dtype
        device = param.device if device is None else device
        return {
            "pos": torch.zeros((), dtype=torch.int32, device=device),
            "layers": [b.mixer.init_cache(batch, max_len, dtype, device) for b in self.blocks],
        }

    def forward(self, tokens_BxT: torch.Tensor, cache: dict[str, Any] | None = None):
        """Logits (B, T, vocab); with a cache, (logits, new_cache) for tokens after cache['pos']."""
        check_tokens(tokens_BxT, self.cfg, None if cache is None else int(cache["pos"]))
        start = 0 if cache is None else int(cache["pos"])
        x = self.embedding(tokens_BxT, start)
        new_layers = []
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x)
            else:
                x, layer_cache = block(x, cache=cache["layers"][i])
                new_layers.append(layer_cache)
        if self.norm_f is not None:
            x = self.norm_f(x)
        logits = self.embedding.attend(x) if self.head is None else self.head(x)
        if cache is None:
            return logits
        return logits, {"pos": cache["pos"] + tokens_BxT.shape[1], "layers": new_layers}


def check_tokens(tokens_BxT, cfg: ModelConfig, start_pos: int | None = None) -> None:
    """Raise ValueError for token tensors of the wrong type, rank, dtype, range or length."""
    if not isinstance(tokens_BxT, torch.Tensor):
        raise ValueError(f"tokens must be a torch.Tensor, got {type(tokens_BxT).__name__}")
    if tokens_BxT.ndim != 2:
        raise ValueError(f"tokens must have shape (batch, seq), got shape {tuple(tokens_BxT.shape)}")
    if tokens_BxT.dtype.is_floating_point or tokens_BxT.dtype.is_complex or tokens_BxT.dtype == torch.bool:
        raise ValueError(f"tokens must be an integer tensor, got dtype {tokens_BxT.dtype}")
    if tokens_BxT.shape[1] == 0:
        raise ValueError(f"tokens must have at least one position, got shape {tuple(tokens_BxT.shape)}")
    if not cfg.extrapolates:
        start = start_pos or 0
        if start + tokens_BxT.shape[1] > cfg.block_size:
            raise ValueError(
                f"sequence of {start + tokens_BxT.shape[1]} positions exceeds block_size={cfg.block_size}; "
                f"embedding={cfg.embedding!r} (learned absolute positions) cannot extrapolate"
            )
    if torch.compiler.is_compiling():
        # Reading the ids' range is a host sync, a graph break under torch.compile; compiled
        # callers get the embedding's own index error instead.
        return
    low, high = int(tokens_BxT.min()), int(tokens_BxT.max())
    if low < 0 or high >= cfg.vocab_size:
        raise ValueError(
            f"token ids must be in [0, vocab_size={cfg.vocab_size}), got min {low} and max {high}"
        )


def build_model(cfg: ModelConfig | str, *, seed: int | None = 0, **overrides) -> Decoder:
    """A Decoder from a ModelConfig or a preset name (with field overrides); seeds torch if given."""
    if isinstance(cfg, str):
        cfg = preset(cfg, **overrides)
    elif overrides:
        cfg = cfg.replace(**overrides)
    if seed is not None:
        torch.manual_seed(seed)
    return Decoder(cfg)


def count_params(model: nn.Module) -> int:
    """Total number of parameter entries."""
    return sum(p.numel() for p in model.parameters())
