"""Data: the built-in corpus, tokenisers, memory-mapped token files and a resumable loader."""

from hope.data.corpus import BUILTIN, builtin_text
from hope.data.loader import TokenLoader, eval_batches
from hope.data.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer
from hope.data.tokens import TokenSplits, prepare_tokens

__all__ = [
    "BUILTIN",
    "BPETokenizer",
    "ByteTokenizer",
    "TokenLoader",
    "TokenSplits",
    "Tokenizer",
    "builtin_text",
    "eval_batches",
    "load_tokenizer",
    "prepare_tokens",
]
