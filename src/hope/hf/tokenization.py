"""Our tokenisers as `transformers` `PreTrainedTokenizerFast` objects (same ids, same bytes).

The byte tokeniser (id = UTF-8 byte) becomes a byte-level BPE with the 256 byte symbols as its
vocabulary, each at its byte's id, and no merges; a run's BPE `tokenizer.json` is already in the
`tokenizers` format and is used as it is. Neither has special tokens: our models were trained on
raw text with documents separated by blank lines.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from hope.data.tokenizer import ByteTokenizer, _byte_level_alphabet, load_tokenizer

_KWARGS = {"model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """`hope.data.tokenizer.ByteTokenizer` as a fast tokenizer: encode(text) is list(text.encode())."""
    vocab = dict(_byte_level_alphabet())  # byte-level symbol -> its byte, so the id is the byte
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **_KWARGS)


def hf_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The fast tokenizer for a run's `tokenizer.json` (ours for bytes, the `tokenizers` format for BPE)."""
    if isinstance(load_tokenizer(path), ByteTokenizer):
        return byte_tokenizer()
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **_KWARGS)
