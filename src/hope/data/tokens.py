"""Turns ``--data`` sources into memory-mapped train/validation token files, cached by content hash.

Text sources (``.txt`` and ``.jsonl`` with a ``"text"`` field per line, or the built-in corpus) are
split into train and validation *as text*, at the line boundary nearest the requested fraction, before
tokenising: the split is the same whatever the tokeniser, and a BPE tokeniser learns from training
text only. Pre-tokenised ``.bin`` files (raw little-endian uint16 ids, nanoGPT's format) are split by
token count. Tokenising happens once per (content, tokeniser, split) and is kept under the cache
directory (``$HOPE_CACHE_DIR``, else ``~/.cache/hope``), so later runs open the token files directly.
"""

import glob
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hope.atomic import write_bytes_atomic, write_text_atomic
from hope.data.corpus import BUILTIN, builtin_text
from hope.data.tokenizer import (
    BPETokenizer,
    ByteTokenizer,
    Tokenizer,
    bpe_vocab_size,
    load_tokenizer,
    validate_spec,
)

TEXT_SUFFIXES = (".txt", ".jsonl")
TOKEN_SUFFIX = ".bin"
_CACHE_FORMAT = 1


def check_sources(owner: str, data, tokenizer: str) -> None:
    """``owner.data`` names at least one text source (paths, globs or BUILTIN) and ``owner.tokenizer``
    is a valid spec, each refused with an error naming the field."""
    if not data or not all(isinstance(d, str) and d for d in data):
        raise ValueError(
            f"{owner}.data must be a non-empty list of paths, globs or {BUILTIN!r}, got {data!r}"
        )
    try:
        validate_spec(tokenizer)
    except ValueError as e:
        raise ValueError(f"{owner}.{e}") from None


def cache_dir() -> Path:
    return Path(os.environ.get("HOPE_CACHE_DIR") or Path.home() / ".cache" / "hope")


@dataclass
class TokenSplits:
    train: np.ndarray  # read-only memmaps of token ids
    val: np.ndarray
    vocab_size: int


def resolve_sources(data: list[str]) -> list[str]:
    """Expands globs into a sorted, de-duplicated list of files; ``builtin`` is the built-in corpus."""
    sources: list[str] = []
    for item in data:
        if item == BUILTIN:
            sources.append(BUILTIN)
            continue
        matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
        if not matches:
            raise FileNotFoundError(f"--data {item!r}: no such file (or no file matches the pattern)")
        for m in matches:
            if os.path.isdir(m):
                raise ValueError(f"--data {m!r} is a directory; pass files or a glob such as {m}/*.txt")
            if not m.endswith(TEXT_SUFFIXES + (TOKEN_SUFFIX,)):
                raise ValueError(
                    f"--data {m!r}: unsupported file type; use .txt, .jsonl or pre-tokenised .bin"
                )
            sources.append(m)
    if not sources:
        raise ValueError("--data names no files")
    kinds = {s.endswith(TOKEN_SUFFIX) for s in sources}
    if len(kinds) > 1:
        raise ValueError("--data mixes pre-tokenised .bin files with text files; use one kind per run")
    return list(dict.fromkeys(sources))


def read_text(path: str) -> str:
    """Text of one source, with clear errors for empty, binary and malformed files."""
    if path == BUILTIN:
        return builtin_text()
    raw = Path(path).read_bytes()
    if not raw.strip():
        raise ValueError(f"{path} is empty")
    if b"\0" in raw:
        raise ValueError(
            f"{path} contains NUL bytes: it looks binary, not text (pre-tokenised ids must end in .bin)"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text (invalid byte at offset {e.start}); is it a binary file?"
        ) from None
    if not path.endswith(".jsonl"):
        return text
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise ValueError(f"{path}:{n}: each JSONL line must be an object with a string field 'text'")  # noqa: TRY004 - bad data
        docs.append(record["text"])
    if not any(d.strip() for d in docs):
        raise ValueError(f"{path} holds no text")
    # Documents are separated by a blank line: byte vocabularies have no spare id for an end-of-text token.
    return "\n\n".join(docs)


def split_text(text: str, val_fraction: float) -> tuple[str, str]:
    """Cuts off the last ``val_fraction`` of the text at the nearest line start (deterministic)."""
    cut = int(len(text) * (1.0 - val_fraction))
    line_start = text.rfind("\n", 0, cut) + 1
    if line_start > 0:
        cut = line_start
    train, val = text[:cut], text[cut:]
    if not train.strip() or not val.strip():
        raise ValueError(
            f"the corpus ({len(text):,} characters) is too short to split into train and validation "
            f"with val_fraction={val_fraction}"
        )
    return train, val


def build_tokenizer(spec: str, train_text: str | None) -> Tokenizer:
    """``byte``, a BPE of N ids trained on ``train_text`` (cached by content), or a saved tokenizer.json."""
    if spec == "byte":
        return ByteTokenizer()
    n = bpe_vocab_size(spec)
    if n is None:
        return load_tokenizer(Path(spec))
    if train_text is None:
        raise ValueError(
            f"--tokenizer {spec} must be trained on text, but --data names pre-tokenised .bin files"
        )
    key = hashlib.sha256(f"bpe|{n}|".encode() + train_text.encode("utf-8")).hexdigest()[:24]
    cached = cache_dir() / "tokenizers" / f"{key}.json"
    if cached.is_file():
        return load_tokenizer(cached)
    tok = BPETokenizer.train(train_text.splitlines(keepends=True), n)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tok.save(cached)
    return tok


def read_token_file(path: str, vocab_size: int) -> np.ndarray:
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(f"{path} is empty")
    if size % 2:
        raise ValueError(
            f"{path} has an odd size ({size} bytes); .bin files hold little-endian uint16 token ids"
        )
    ids = np.memmap(path, dtype="<u2", mode="r")
    top = int(ids.max())
    if top >= vocab_size:
        raise ValueError(
            f"{path} holds token id {top}, beyond the tokenizer's vocabulary of {vocab_size} ids "
            "(was it made with another tokenizer?)"
        )
    return ids


def prepare_tokens(
    data: list[str], tokenizer_spec: str, val_fraction: float
) -> tuple[TokenSplits, Tokenizer]:
    """Resolves ``data``, builds the tokeniser and returns memory-mapped train/validation token arrays."""
    sources = resolve_sources(data)
    if sources[0].endswith(TOKEN_SUFFIX):
        tokenizer = build_tokenizer(tokenizer_spec, None)
        parts = [read_token_file(s, tokenizer.vocab_size) for s in sources]
        ids = parts[0] if len(parts) == 1 else np.concatenate(parts)  # one file stays memory-mapped
        cut = int(len(ids) * (1.0 - val_fraction))
        if cut == 0 or cut == len(ids):
            raise ValueError(f"{len(ids)} tokens are too few to split with val_fraction={val_fraction}")
        return TokenSplits(ids[:cut], ids[cut:], tokenizer.vocab_size), tokenizer

    text = "\n\n".join(read_text(s) for s in sources)
    train_text, val_text = split_text(text, val_fraction)
    tokenizer = build_tokenizer(tokenizer_spec, train_text)
    digest = hashlib.sha256(f"v{_CACHE_FORMAT}|{tokenizer.fingerprint()}|{val_fraction}|".encode())
    digest.update(text.encode("utf-8"))
    stem = cache_dir() / "tokens" / digest.hexdigest()[:24]
    meta_path = stem.with_suffix(".json")
    if not meta_path.is_file():
        stem.parent.mkdir(parents=True, exist_ok=True)
        train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
        for name, ids in (("train", train_ids), ("val", val_ids)):
            write_bytes_atomic(stem.with_suffix(f".{name}.bin"), ids.tobytes())
        # The metadata is written last: its presence marks a complete cache entry.
        meta = {
            "dtype": train_ids.dtype.str,
            "train": len(train_ids),
            "val": len(val_ids),
            "sources": sources,
        }
        write_text_atomic(meta_path, json.dumps(meta))
    meta = json.loads(meta_path.read_text())
    splits = {
        name: np.memmap(stem.with_suffix(f".{name}.bin"), dtype=meta["dtype"], mode="r", shape=(meta[name],))
        for name in ("train", "val")
    }
    return TokenSplits(splits["train"], splits["val"], tokenizer.vocab_size), tokenizer
