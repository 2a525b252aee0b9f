"""Training checkpoints with orbax-checkpoint: the full train state, atomically, keeping the last K.

A checkpoint is one orbax step folder ``<run>/checkpoints/<step>/`` with two items:

- ``state``: the flat list of array leaves of ``(params, rest, opt_state)`` (rest = the non-parameter
  model state, i.e. dropout RNG keys and counters; typed PRNG keys are stored as their key data);
- ``meta``: JSON with the step, the ModelConfig and TrainConfig, the parameter names and every
  leaf's shape and dtype, and the data fingerprint.

The data position needs no storage: batches are a pure function of (seed, step). orbax writes
each step into a temporary folder and renames it when complete, so an interrupted save never
leaves a half-written checkpoint that looks valid. Restoring checks the configuration first
(a different model says which fields differ), then the leaves; an unreadable checkpoint raises
CheckpointError naming the older ones that can be used instead.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from physnets_core.config import ModelConfig

FORMAT = "physnets-train-state/1"
# TrainConfig fields that may change between an interrupted run and its resume.
RESUMABLE_CHANGES = frozenset(
    {"steps", "eval_interval", "eval_batches", "log_interval", "ckpt_interval", "keep_checkpoints", "sample_tokens"}
)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or written for another configuration."""


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def encode_leaves(tree) -> tuple[list, list[str | None]]:
    """Array leaves of `tree` with typed PRNG keys replaced by their uint32 key data; also the
    key implementation name per leaf (None for ordinary arrays)."""
    leaves = jax.tree.leaves(tree)
    out, impls = [], []
    for leaf in leaves:
        if _is_key(leaf):
            out.append(jax.random.key_data(leaf))
            impls.append(str(jax.random.key_impl(leaf)))
        else:
            out.append(leaf)
            impls.append(None)
    return out, impls


def decode_leaves(template, leaves: Sequence, impls: Sequence[str | None]):
    """Inverse of encode_leaves: rebuild `template`'s tree from stored leaves."""
    values = [
        jax.random.wrap_key_data(leaf, impl=impl) if impl is not None else leaf
        for leaf, impl in zip(leaves, impls, strict=True)
    ]
    return jax.tree.unflatten(jax.tree.structure(template), values)


def _dtype_name(x) -> str:
    return str(np.dtype(x.dtype))


class Checkpointer:
    """Save and restore train states under `directory` (one numbered folder per step)."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        import orbax.checkpoint as ocp

        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep={keep!r} must be a positive integer (checkpoints to keep)")
        self.directory = pathlib.Path(directory).absolute()
        self._ocp = ocp
        # cleanup_tmp_directories: a save killed mid-write leaves <step>.orbax-checkpoint-tmp behind;
        # orbax never lists it as a step, and it is deleted when the folder is next opened
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=True
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, ascending."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest checkpointed step, or None."""
        steps = self.steps()
        return steps[-1] if steps else None

    def path(self, step: int) -> pathlib.Path:
        """Folder of one step's checkpoint."""
        return self.directory / str(step)

    def delete_after(self, step: int, listed: Sequence[int] | None = None) -> list[int]:
        """Delete every checkpoint later than `step` (the abandoned branch of a run resumed from
        `step`); returns the deleted steps. `listed`: the steps as read before (in several processes,
        the list every process read before any deleted), else the folder is read now."""
        later = [s for s in (self.steps() if listed is None else listed) if s > step]
        for s in later:
            self._manager.delete(s)
        return later

    def save(self, step: int, state, meta: Mapping[str, Any]) -> pathlib.Path:
        """Write `state` (any pytree of arrays) and JSON `meta` as checkpoint `step` (blocking)."""
        leaves, impls = encode_leaves(state)
        meta = {
            **meta,
            "format": FORMAT,
            "step": int(step),
            "key_impls": impls,
            "shapes": [list(np.shape(x)) for x in leaves],
            "dtypes": [_dtype_name(x) for x in leaves],
        }
        if int(step) in self._manager.all_steps():  # a run resumed from an older step replaces it
            self._manager.delete(int(step))
        args = self._ocp.args.Composite(
            state=self._ocp.args.StandardSave({"leaves": leaves}),
            meta=self._ocp.args.JsonSave(meta),
        )
        self._manager.save(int(step), args=args, force=True)
        self._manager.wait_until_finished()
        return self.path(step)

    def read_meta(self, step: int, *, training: bool = True) -> dict[str, Any]:
        """The JSON metadata of checkpoint `step` (`training` only changes the hint of the error)."""
        self._require(step)
        try:
            meta = self._manager.restore(
                step, args=self._ocp.args.Composite(meta=self._ocp.args.JsonRestore())
            )["meta"]
        except Exception as err:  # orbax raises many types for unreadable files
            raise self._corrupt(step, err, training=training) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise self._corrupt(step, ValueError(f"metadata format {getattr(meta, 'get', lambda k: None)('format')!r}"),
                                training=training)
        return meta

    def restore(self, step: int | None, template, *, expect: Mapping[str, Any] | None = None):
        """(state, meta) of checkpoint `step` (None: the latest), in `template`'s tree structure
        and shardings. `expect` may hold 'model_config' / 'train_config' dicts to compare."""
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
        meta = self.read_meta(step)
        if expect:
            check_meta(meta, expect, where=str(self.path(step)))
        t_leaves, t_impls = encode_leaves(template)
        shapes = [list(np.shape(x)) for x in t_leaves]
        dtypes = [_dtype_name(x) for x in t_leaves]
        if shapes != meta["shapes"] or dtypes != meta["dtypes"] or t_impls != meta["key_impls"]:
            raise CheckpointError(
                f"checkpoint {self.path(step)} holds {len(meta['shapes'])} arrays that do not match the "
                f"{len(shapes)} of the current train state (a different optimizer or model?)"
            )
        abstract = [
            jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=getattr(x, "sharding", None))
            for x in t_leaves
        ]
        restored = self._restore_leaves(step, abstract)
        return decode_leaves(template, restored, meta["key_impls"]), meta

    def _restore_leaves(self, step: int, abstract: list, *, training: bool = True) -> list:
        """The saved leaves of `step` with the shapes, dtypes and shardings of `abstract`."""
        try:
            return self._manager.restore(
                step,
                args=self._ocp.args.Composite(state=self._ocp.args.StandardRestore({"leaves": abstract})),
            )["state"]["leaves"]
        except Exception as err:
            raise self._corrupt(step, err, training=training) from None

    def restore_arrays(self, step: int | None = None) -> tuple[list, dict[str, Any]]:
        """(leaves as numpy arrays on the host, meta) without a template (export, inspection)."""
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint found in {self.directory}")
        meta = self.read_meta(step, training=False)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = [
            jax.ShapeDtypeStruct(tuple(s), np.dtype(d), sharding=device)
            for s, d in zip(meta["shapes"], meta["dtypes"], strict=True)
        ]
        restored = self._restore_leaves(step, abstract, training=False)
        return [np.asarray(x) for x in restored], meta

    def close(self) -> None:
        """Release orbax resources."""
        self._manager.close()

    def _require(self, step: int) -> None:
        steps = self.steps()
        if step not in steps:
            raise CheckpointError(
                f"no checkpoint for step {step} in {self.directory}; available steps: "
                f"{', '.join(map(str, steps)) or 'none'}"
            )

    def _corrupt(self, step: int, err: Exception, *, training: bool = True) -> CheckpointError:
        older = [s for s in self.steps() if s < step]
        if not older:
            hint = "no older checkpoint exists"
        elif training:
            hint = (f"the previous checkpoint (step {older[-1]}) is usable: resume from it with --resume-step "
                    f"{older[-1]}, or delete {self.path(step)}")
        else:
            hint = (f"the previous checkpoint (step {older[-1]}) is usable: pass its folder {self.path(older[-1])} "
                    "instead of the run folder")
        reason = str(err).splitlines()[0][:300] if str(err) else ""
        return CheckpointError(
            f"checkpoint {self.path(step)} is corrupt or incomplete ({type(err).__name__}: {reason}); {hint}"
        )


def check_meta(meta: Mapping[str, Any], expect: Mapping[str, Any], *, where: str) -> None:
    """Raise CheckpointError listing the fields in which a checkpoint's configs differ from `expect`."""
    problems = []
    if "model_config" in expect:
        saved = ModelConfig.from_dict(meta["model_config"])
        current = expect["model_config"]
        current = current if isinstance(current, ModelConfig) else ModelConfig.from_dict(current)
        diff = saved.diff(current)
        problems += [f"model {k}: checkpoint {a!r}, current {b!r}" for k, (a, b) in diff.items()]
    if "train_config" in expect:
        saved_tc, current_tc = meta.get("train_config", {}), dict(expect["train_config"])
        for k in sorted(set(saved_tc) | set(current_tc)):
            if k not in RESUMABLE_CHANGES and saved_tc.get(k) != current_tc.get(k):
                problems.append(f"train {k}: checkpoint {saved_tc.get(k)!r}, current {current_tc.get(k)!r}")
    if "data_fingerprint" in expect and meta.get("data_fingerprint") != expect["data_fingerprint"]:
        problems.append("data: the corpus or tokenizer differs from the one the checkpoint was trained on")
    if problems:
        raise CheckpointError(
            f"checkpoint {where} was written for a different configuration:\n  " + "\n  ".join(problems)
        )


def meta_json(meta: Mapping[str, Any]) -> str:
    """Pretty JSON of checkpoint metadata (for `physnets eval`/inspection)."""
    return json.dumps(meta, indent=2, sort_keys=True)
