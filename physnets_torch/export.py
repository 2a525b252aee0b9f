"""Load and save the cross-backend export folder (model.safetensors + config.json, format in
physnets_core.export_format): the torch twin of physnets_jax/export.py."""

from __future__ import annotations

import pathlib

import torch

from physnets_core.export_format import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    read_config,
    weights_metadata,
    write_config,
)

__all__ = ["load_pretrained", "save_pretrained", "read_config", "CONFIG_FILE", "WEIGHTS_FILE", "TOKENIZER_FILE"]


def load_pretrained(path, *, device=None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A physnets_torch Decoder (eval mode) with the weights of an export folder."""
    from safetensors.torch import load_file

    from physnets_torch.convert import load_state
    from physnets_torch.model import Decoder

    path = pathlib.Path(path)
    cfg = read_config(path)
    model = Decoder(cfg)
    load_state(model, load_file(str(path / WEIGHTS_FILE)))
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def save_pretrained(model: torch.nn.Module, out_dir, *, overwrite: bool = False) -> pathlib.Path:
    """Write a physnets_torch model as an export folder (state_dict names, config.json)."""
    from safetensors.torch import save_file

    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; pass overwrite=True to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata=weights_metadata())
    write_config(model.cfg, out_dir)
    return out_dir
