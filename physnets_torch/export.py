"""Load and save the cross-backend export folder (model.safetensors + config.json, format in
physnets_core.export_format): the torch twin of physnets_jax/export.py."""

from __future__ import annotations

import pathlib

import torch

from physnets_core.export_format import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    check_finite_weights,
    read_config,
    unreadable_weights_message,
    weights_metadata,
    write_config,
)
from physnets_core.folders import StagedFolder, check_target

__all__ = ["load_pretrained", "save_pretrained", "read_config", "CONFIG_FILE", "WEIGHTS_FILE", "TOKENIZER_FILE"]


def load_pretrained(path, *, device=None, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """A physnets_torch Decoder (eval mode) with the weights of an export folder."""
    from safetensors.torch import load_file

    from physnets_torch.convert import load_state
    from physnets_torch.model import Decoder

    path = pathlib.Path(path)
    cfg = read_config(path)
    model = Decoder(cfg)
    weights = path / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error type for truncated or corrupt files
        raise ValueError(unreadable_weights_message(weights, err)) from None
    check_finite_weights(weights, {k: int((~torch.isfinite(v)).sum()) for k, v in tensors.items()
                                   if v.is_floating_point() or v.is_complex()})
    load_state(model, tensors)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval()


def save_pretrained(model: torch.nn.Module, out_dir, *, overwrite: bool = False) -> pathlib.Path:
    """Write a physnets_torch model as an export folder (state_dict names, config.json); an existing
    out_dir is replaced only with overwrite=True and only if it is an export folder."""
    from safetensors.torch import save_file

    out_dir = pathlib.Path(out_dir)
    check_target(out_dir, overwrite=overwrite, kinds=("export",), what="export folder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with StagedFolder(out_dir) as tmp:  # written beside out_dir, swapped in when complete
        save_file(state, str(tmp / WEIGHTS_FILE), metadata=weights_metadata())
        write_config(model.cfg, tmp)
    return out_dir
