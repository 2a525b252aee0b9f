"""Safe replacement of output folders (runs, exports, comparison results); standard library only.

The rules (docs/training.md, "Overwriting"): a folder is replaced only when it is recognisably
a physnets folder of an allowed kind, never when it is (or contains) a source of the same
command, and only after the new folder has been written completely beside it: the new content
goes into a hidden sibling (`.NAME.physnets-staging`), which is swapped in at the end. Until the
swap the old folder is untouched, so any error before it leaves the user's files as they were.
"""

from __future__ import annotations

import os
import pathlib
import shutil

RUN_FILE = "run.json"
EXPORT_FILES = ("config.json", "model.safetensors")
RESULTS_FILE = "results.json"
SUITE_FILE = "suite.json"  # a comparison suite's settings, written when it starts (before results.json)
STAGING_MARKER = ".physnets-staging"


def write_text_atomic(path, text: str) -> pathlib.Path:
    """Write `text` (UTF-8) to `path` through a hidden temporary sibling and a rename, so a killed
    process never leaves a half-written file: readers see the old file or the new one."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def folder_kind(path) -> str | None:
    """'run' (holds run.json), 'export' (config.json + model.safetensors), 'results' (results.json
    or suite.json of `physnets compare`, finished or interrupted), 'empty' (an empty folder) or None
    (anything else, or not a folder)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return None
    if (path / RUN_FILE).is_file():
        return "run"
    if all((path / name).is_file() for name in EXPORT_FILES):
        return "export"
    if (path / RESULTS_FILE).is_file() or (path / SUITE_FILE).is_file():
        return "results"
    if not any(path.iterdir()):
        return "empty"
    return None


_KIND_WORDS = {"run": "a physnets run folder (run.json)", "export": "a physnets export folder "
               "(config.json + model.safetensors)", "results": "a physnets results folder (results.json)"}


def check_target(target, *, overwrite: bool, kinds: tuple[str, ...], sources=(), what: str = "folder",
                 option: str = "--overwrite") -> None:
    """Raise ValueError unless writing to `target` is safe: it does not exist or is an empty
    folder; or `overwrite` is set and it is a folder of one of `kinds` that is neither one of
    `sources` (paths the same command reads) nor a parent of one. Deletes nothing."""
    target = pathlib.Path(target)
    resolved = target.resolve()
    for source in sources:
        if source is None:
            continue
        src = pathlib.Path(source).expanduser().resolve()
        if src == resolved or resolved in src.parents:
            relation = "is" if src == resolved else "contains"
            raise ValueError(f"{what} {target} {relation} {source}, which this command reads; choose another {what}")
    if not target.exists() and not target.is_symlink():
        return
    kind = folder_kind(target)
    if kind == "empty":
        return
    if not overwrite:
        raise FileExistsError(f"{what} {target} already exists; pass {option} to replace it")
    if kind not in kinds:
        allowed = " or ".join(_KIND_WORDS[k] for k in kinds)
        raise ValueError(f"{target} is not {allowed}; {option} only replaces such folders, so nothing was deleted")


def staging_path(target) -> pathlib.Path:
    """The hidden sibling in which the new content of `target` is written before the swap."""
    target = pathlib.Path(target)
    return target.parent / f".{target.name}.physnets-staging"


def begin_staging(target) -> pathlib.Path:
    """Create (empty) the staging sibling of `target`; a stale one left by a killed command is
    removed first (recognised by its marker file, so a user's folder of that name is refused)."""
    staging = staging_path(target)
    if staging.exists():
        if not (staging / STAGING_MARKER).is_file():
            raise ValueError(f"{staging} exists and was not made by physnets; move it away first")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / STAGING_MARKER).write_text("physnets writes this folder; it replaces its sibling when done\n")
    return staging


def commit_staging(staging, target) -> pathlib.Path:
    """Swap the finished staging folder in as `target`; the previous `target` (if any) is moved
    aside first and deleted only after the new one is in place."""
    staging, target = pathlib.Path(staging), pathlib.Path(target)
    old = None
    if target.exists():
        if folder_kind(target) == "empty":
            target.rmdir()
        else:
            old = target.parent / f".{target.name}.physnets-old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
    os.replace(staging, target)
    (target / STAGING_MARKER).unlink(missing_ok=True)  # only now: a staging folder always carries it
    if old is not None:
        shutil.rmtree(old)
    return target


def abandon_staging(staging) -> None:
    """Delete a staging folder after an error (the target was never touched)."""
    staging = pathlib.Path(staging)
    if (staging / STAGING_MARKER).is_file():
        shutil.rmtree(staging, ignore_errors=True)


class StagedFolder:
    """Context manager: `with StagedFolder(target) as tmp:` write into tmp; on success tmp
    replaces target, on an exception tmp is deleted and target is left as it was."""

    def __init__(self, target):
        self.target = pathlib.Path(target)
        self.path: pathlib.Path | None = None

    def __enter__(self) -> pathlib.Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = begin_staging(self.target)
        return self.path

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            commit_staging(self.path, self.target)
        else:
            abandon_staging(self.path)
        return False


def check_writable(folder) -> None:
    """Raise PermissionError naming `folder` when a file cannot be created in it (probes with a
    real file, so read-only mounts and permissions are both caught)."""
    folder = pathlib.Path(folder)
    probe = folder / f".physnets-write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to {folder} ({err.strerror or err}); training needs to write "
                              "checkpoints and metrics there") from None
