"""Tokenisers: raw UTF-8 bytes (vocab 256) and byte-level BPE trained locally with HF ``tokenizers``.

Both map text to ids and expose ``token_bytes(id)``, the exact bytes a token stands for: generation
streams text through an incremental UTF-8 decoder with it, and evaluation counts bytes with it for
bits per byte. Every run saves its tokeniser as ``tokenizer.json`` so a run directory is self-contained.
"""

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from hope.atomic import write_text_atomic

TOKENIZER_FILE = "tokenizer.json"
_BPE_SPEC = re.compile(r"bpe:(\d+)")
# BPE merges start from the 256-symbol byte alphabet, so a useful vocabulary is strictly larger.
MIN_BPE_VOCAB = 257
MAX_BPE_VOCAB = 1 << 20


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def token_bytes(self, token_id: int) -> bytes: ...
    def fingerprint(self) -> str: ...
    def save(self, path: Path) -> None: ...


def validate_spec(spec: str) -> None:
    """Raises ValueError unless ``spec`` is ``byte``, ``bpe:N`` or a path to a saved ``tokenizer.json``."""
    if spec == "byte" or spec.endswith(".json"):
        return
    m = _BPE_SPEC.fullmatch(spec)
    if m is None:
        raise ValueError(
            f"tokenizer must be 'byte', 'bpe:N' (e.g. bpe:4096) or a tokenizer .json file, got {spec!r}"
        )
    n = int(m.group(1))
    if not MIN_BPE_VOCAB <= n <= MAX_BPE_VOCAB:
        raise ValueError(f"tokenizer bpe:N needs {MIN_BPE_VOCAB} <= N <= {MAX_BPE_VOCAB}, got {n}")


def bpe_vocab_size(spec: str) -> int | None:
    """N for a ``bpe:N`` spec, else None."""
    m = _BPE_SPEC.fullmatch(spec)
    return int(m.group(1)) if m else None


def _ids_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


class ByteTokenizer:
    """Each UTF-8 byte is a token: no training, no unknown tokens, 256 ids."""

    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id])

    def fingerprint(self) -> str:
        return "byte"

    def save(self, path: Path) -> None:
        write_text_atomic(Path(path), json.dumps({"type": "byte", "vocab_size": 256}) + "\n")


def _byte_level_alphabet() -> dict[str, int]:
    """Inverse of the byte-level BPE byte-to-character map (GPT-2's): printable Latin-1 bytes stand for
    themselves, the other 68 bytes are shifted to code points 256 and up, so every byte is one character."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    char_of = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in char_of:
            char_of[b] = chr(256 + shifted)
            shifted += 1
    return {c: b for b, c in char_of.items()}


class BPETokenizer:
    """A byte-level BPE tokeniser from HF ``tokenizers``; any text encodes, nothing maps to <unk>."""

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        alphabet = _byte_level_alphabet()
        pieces = [tokenizer.id_to_token(i) for i in range(self.vocab_size)]
        if all(p is not None and all(c in alphabet for c in p) for p in pieces):
            self._bytes = [bytes(alphabet[c] for c in p) for p in pieces]
        else:
            # A foreign tokenizer.json that is not byte-level: its decoder is the best byte map we have.
            self._bytes = [tokenizer.decode([i]).encode("utf-8") for i in range(self.vocab_size)]

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_file(cls, path: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(path)))

    def encode(self, text: str) -> np.ndarray:
        # Line by line lets the Rust side encode in parallel; the ids are a pure function of the text.
        lines = text.splitlines(keepends=True)
        ids = [i for enc in self._tok.encode_batch(lines, add_special_tokens=False) for i in enc.ids]
        return np.asarray(ids, dtype=_ids_dtype(self.vocab_size))

    def decode(self, ids: Iterable[int]) -> str:
        return b"".join(self._bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def fingerprint(self) -> str:
        import hashlib

        return "bpe-" + hashlib.sha256(self._tok.to_str().encode()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        write_text_atomic(Path(path), self._tok.to_str(pretty=True))


def load_tokenizer(path: Path) -> Tokenizer:
    """Loads a ``tokenizer.json`` written by :meth:`save` (ours for bytes, HF's format for BPE)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        head = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a tokenizer JSON file: {e}") from None
    if head.get("type") == "byte":
        return ByteTokenizer()
    return BPETokenizer.from_file(path)


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """Bytes each id stands for, as an array indexed by id (for bits-per-byte)."""
    return np.array([len(tokenizer.token_bytes(i)) for i in range(tokenizer.vocab_size)], dtype=np.int64)
