"""Cross-backend weights from JAX: save and load the export folder (model.safetensors with torch
names and layouts + config.json, format in physnets_core.export_format; naming rules in
physnets_core.naming). Needs no torch."""

from __future__ import annotations

import pathlib
import shutil

import numpy as np

from physnets_core.config import ModelConfig
from physnets_core.export_format import (
    CONFIG_FILE,
    FORMAT,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    check_finite_weights,
    read_config,
    unreadable_weights_message,
    weights_metadata,
    write_config,
)
from physnets_core.folders import StagedFolder, check_target
from physnets_core.naming import jax_layout_from_torch, torch_layout_from_jax

__all__ = ["save_pretrained", "load_pretrained", "export_checkpoint", "save_flat", "read_config",
           "param_names", "CONFIG_FILE", "WEIGHTS_FILE", "TOKENIZER_FILE", "FORMAT"]


def param_names(cfg: ModelConfig) -> list[str]:
    """Dotted JAX names of every parameter of the Decoder of `cfg` (no memory allocated)."""
    from flax import nnx

    from physnets_jax.model import Decoder
    from physnets_jax.state import flat_params

    abstract = nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))
    return list(flat_params(abstract))


def save_flat(flat_jax: dict[str, np.ndarray], cfg: ModelConfig, out_dir, *, tokenizer_file=None, tokenizer=None,
              step: int | None = None, overwrite: bool = False, sources=()) -> pathlib.Path:
    """Write flat JAX-named parameters as an export folder (torch names/layout); returns it.

    The folder is written beside out_dir and swapped in when complete; an existing out_dir is
    replaced only with overwrite=True, only if it is an export folder, and never when it is (or
    contains) one of `sources` (physnets_core.folders)."""
    from safetensors.numpy import save_file

    out_dir = pathlib.Path(out_dir)
    check_target(out_dir, overwrite=overwrite, kinds=("export",), sources=sources, what="export folder")
    with StagedFolder(out_dir) as tmp:
        save_file(torch_layout_from_jax(flat_jax), str(tmp / WEIGHTS_FILE), metadata=weights_metadata(step))
        write_config(cfg, tmp)
        if tokenizer_file is not None and pathlib.Path(tokenizer_file).is_file():
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        if tokenizer is not None:
            tokenizer.save(tmp / TOKENIZER_FILE)
    return out_dir


def save_pretrained(model, out_dir, *, tokenizer=None, overwrite: bool = False) -> pathlib.Path:
    """Export a physnets_jax model (and optionally its tokenizer) to out_dir."""
    from physnets_jax.state import flat_params

    return save_flat(flat_params(model), model.cfg, out_dir, tokenizer=tokenizer, overwrite=overwrite)


def export_checkpoint(source, out_dir, *, step: int | None = None, overwrite: bool = False) -> pathlib.Path:
    """Export a run folder (its latest checkpoint, or `step`) or one checkpoint folder
    (<run>/checkpoints/<step>) to out_dir; the run's tokenizer.json goes along."""
    from physnets_jax.training.checkpoint import Checkpointer, CheckpointError

    source = pathlib.Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist (expected a run folder or a checkpoint folder)")
    if (source / "checkpoints").is_dir():
        run_dir, ckpt_dir = source, source / "checkpoints"
    elif source.name.isdigit() and (source / "state").is_dir():
        run_dir, ckpt_dir, step = source.parent.parent, source.parent, int(source.name)
    else:
        raise CheckpointError(f"{source} is neither a run folder (with checkpoints/) nor a checkpoint folder")
    # checked before reading the checkpoint, so a refused target costs nothing
    check_target(out_dir, overwrite=overwrite, kinds=("export",), sources=(source, run_dir), what="export folder")
    ckpt = Checkpointer(ckpt_dir)
    try:
        leaves, meta = ckpt.restore_arrays(step)
    finally:
        ckpt.close()
    names = meta["param_names"]
    flat = dict(zip(names, leaves[: len(names)], strict=True))
    cfg = ModelConfig.from_dict(meta["model_config"])
    return save_flat(flat, cfg, out_dir, tokenizer_file=run_dir / TOKENIZER_FILE, step=meta["step"],
                     overwrite=overwrite, sources=(source, run_dir))


def load_pretrained(path, *, dtype=None):
    """A physnets_jax Decoder with the weights of an export folder (model.safetensors + config.json)."""
    import jax.numpy as jnp
    from safetensors.numpy import load_file

    from physnets_jax.model import build_model, cast_params
    from physnets_jax.state import load_flat_params
    path = pathlib.Path(path)
    cfg = read_config(path)
    model = build_model(cfg, seed=0)
    weights = path / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights))
    except Exception as err:  # safetensors raises its own error type for truncated or corrupt files
        raise ValueError(unreadable_weights_message(weights, err)) from None
    check_finite_weights(weights, {k: int(np.size(v) - np.count_nonzero(np.isfinite(v))) for k, v in tensors.items()
                                   if np.issubdtype(v.dtype, np.inexact)})
    flat = jax_layout_from_torch(tensors, param_names(cfg))
    load_flat_params(model, flat)
    if dtype is not None:
        cast_params(model, jnp.dtype(dtype))
    model.eval()
    return model
