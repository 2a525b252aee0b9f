"""The cross-backend export folder: model.safetensors + config.json (+ tokenizer.json).

model.safetensors holds the parameters under their **torch names and layouts**
(physnets_core.naming), so a torch user can read it with plain `safetensors.torch.load_file` +
`load_state_dict`; physnets_jax converts back exactly. config.json is ModelConfig.to_json().
The safetensors metadata records the format, the names ('torch') and the training step.
"""

from __future__ import annotations

import json
import pathlib

from physnets_core.config import ModelConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "physnets-pretrained/1"


def weights_metadata(step: int | None = None) -> dict[str, str]:
    """The safetensors metadata of an export (format, naming convention, training step or -1)."""
    return {"format": FORMAT, "names": "torch", "step": str(step if step is not None else -1)}


def read_json(path) -> dict:
    """The JSON object in `path`; a ValueError names the file when it is not valid JSON."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not valid JSON (not UTF-8 text)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def is_export_dir(path) -> bool:
    """Whether `path` looks like an export folder (config.json and model.safetensors)."""
    path = pathlib.Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_config(path) -> ModelConfig:
    """ModelConfig of an export folder; errors name the folder or the file and what is wrong."""
    path = pathlib.Path(path)
    if not is_export_dir(path):
        raise FileNotFoundError(f"{path} is not an export folder: it needs {CONFIG_FILE} and {WEIGHTS_FILE}")
    config_path = path / CONFIG_FILE
    try:
        return ModelConfig.from_dict(read_json(config_path))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{config_path}: {e}") from None


def unreadable_weights_message(path, err: Exception) -> str:
    """The error text for a model.safetensors that cannot be read (truncated, corrupt, not one)."""
    reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
    return f"{path} is not a readable safetensors file ({reason}); export the model again"


def check_finite_weights(path, nonfinite: dict[str, int]) -> None:
    """Raise ValueError naming the tensors of `path` that hold NaN or inf ({name: count} of
    non-finite values, computed by the loading backend)."""
    bad = {k: n for k, n in nonfinite.items() if n}
    if bad:
        listed = ", ".join(f"{k} ({n:,} values)" for k, n in sorted(bad.items())[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{path} holds NaN or inf in {len(bad)} tensor(s): {listed}{more}; "
                         "these weights are unusable (export them again from a good checkpoint)")


def write_config(cfg: ModelConfig, out_dir) -> pathlib.Path:
    """Write config.json into out_dir; returns its path."""
    path = pathlib.Path(out_dir) / CONFIG_FILE
    path.write_text(cfg.to_json() + "\n", encoding="utf-8")
    return path
