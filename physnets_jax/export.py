"""Cross-backend weights: a folder with model.safetensors + config.json (+ tokenizer.json).

model.safetensors holds the parameters under their **torch names and layouts** (the rule set of
physnets_torch.convert: kernels transposed to (out, in), 'kernel'/'embedding'/'scale' -> 'weight'),
so a torch user can read it with plain `safetensors.torch.load_file` + `load_state_dict`;
physnets_jax.load_pretrained converts back (exactly). config.json is ModelConfig.to_json().
The safetensors metadata records the format, the names ('torch') and the training step.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np

from physnets_jax.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "physnets-pretrained/1"


def _prepare_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite (overwrite=True) to replace it")
        if out_dir.is_dir():
            shutil.rmtree(out_dir)
        else:
            out_dir.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def save_flat(flat_jax: dict[str, np.ndarray], cfg: ModelConfig, out_dir, *, tokenizer_file=None,
              step: int | None = None, overwrite: bool = False) -> pathlib.Path:
    """Write flat JAX-named parameters as an export folder (torch names/layout); returns it."""
    from safetensors.numpy import save_file

    from physnets_torch.convert import swap_layout, torch_name

    out_dir = pathlib.Path(out_dir)
    _prepare_out_dir(out_dir, overwrite)
    tensors = {torch_name(k): np.array(swap_layout(k, np.asarray(v)), order="C") for k, v in flat_jax.items()}
    metadata = {"format": FORMAT, "names": "torch", "step": str(step if step is not None else -1)}
    save_file(tensors, str(out_dir / WEIGHTS_FILE), metadata=metadata)
    (out_dir / CONFIG_FILE).write_text(cfg.to_json() + "\n", encoding="utf-8")
    if tokenizer_file is not None and pathlib.Path(tokenizer_file).is_file():
        shutil.copyfile(tokenizer_file, out_dir / TOKENIZER_FILE)
    return out_dir


def save_pretrained(model, out_dir, *, tokenizer=None, overwrite: bool = False) -> pathlib.Path:
    """Export a physnets_jax model (and optionally its tokenizer) to out_dir."""
    from physnets_jax.state import flat_params

    out_dir = pathlib.Path(out_dir)
    path = save_flat(flat_params(model), model.cfg, out_dir, overwrite=overwrite)
    if tokenizer is not None:
        tokenizer.save(out_dir / TOKENIZER_FILE)
    return path


def export_checkpoint(source, out_dir, *, step: int | None = None, overwrite: bool = False) -> pathlib.Path:
    """Export a run folder (its latest checkpoint, or `step`) or one checkpoint folder
    (<run>/checkpoints/<step>) to out_dir; the run's tokenizer.json goes along."""
    from physnets_jax.checkpoint import Checkpointer, CheckpointError

    source = pathlib.Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist (expected a run folder or a checkpoint folder)")
    if (source / "checkpoints").is_dir():
        run_dir, ckpt_dir = source, source / "checkpoints"
    elif source.name.isdigit() and (source / "state").is_dir():
        run_dir, ckpt_dir, step = source.parent.parent, source.parent, int(source.name)
    else:
        raise CheckpointError(f"{source} is neither a run folder (with checkpoints/) nor a checkpoint folder")
    ckpt = Checkpointer(ckpt_dir)
    try:
        leaves, meta = ckpt.restore_arrays(step)
    finally:
        ckpt.close()
    names = meta["param_names"]
    flat = dict(zip(names, leaves[: len(names)], strict=True))
    cfg = ModelConfig.from_dict(meta["model_config"])
    return save_flat(flat, cfg, out_dir, tokenizer_file=run_dir / TOKENIZER_FILE, step=meta["step"],
                     overwrite=overwrite)


def read_config(path) -> ModelConfig:
    """ModelConfig of an export folder."""
    path = pathlib.Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{path} is not an export folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    return ModelConfig.from_dict(json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")))


def load_pretrained(path, *, dtype=None):
    """A physnets_jax Decoder with the weights of an export folder (model.safetensors + config.json)."""
    import jax.numpy as jnp
    from safetensors.numpy import load_file

    from physnets_jax.model import build_model, cast_params
    from physnets_jax.state import load_flat_params
    from physnets_torch.convert import torch_to_jax

    path = pathlib.Path(path)
    cfg = read_config(path)
    model = build_model(cfg, seed=0)
    flat = torch_to_jax(load_file(str(path / WEIGHTS_FILE)), cfg)
    load_flat_params(model, flat)
    if dtype is not None:
        cast_params(model, jnp.dtype(dtype))
    model.eval()
    return model
