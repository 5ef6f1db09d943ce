"""Built-in corpus, tokenisers, token files and the loader: behaviour and clear errors on bad data."""

import json

import numpy as np
import pytest
import torch

from hope.data import (
    BUILTIN,
    ByteTokenizer,
    TokenLoader,
    builtin_text,
    eval_batches,
    load_tokenizer,
    prepare_tokens,
)
from hope.data.tokenizer import BPETokenizer, token_byte_lengths, validate_spec
from hope.data.tokens import split_text


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPE_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(builtin_text()[:20_000])
    return path


def test_builtin_corpus_is_megabytes_of_english():
    text = builtin_text()
    assert len(text) > 4_000_000
    assert "To be, or not to be" in text and "ROMEO AND JULIET" in text
    assert "gutenberg" not in text.lower()


def test_byte_tokenizer_round_trips_unicode():
    tok = ByteTokenizer()
    text = "Wherefore art thou — Roméo? 🌹"
    ids = tok.encode(text)
    assert ids.max() < 256 and tok.decode(ids) == text
    assert b"".join(tok.token_bytes(int(i)) for i in ids) == text.encode()


def test_bpe_trains_saves_and_reloads_identically(tmp_path):
    text = builtin_text()[:50_000]
    tok = BPETokenizer.train(text.splitlines(keepends=True), 400)
    assert tok.vocab_size == 400
    ids = tok.encode(text[:2000])
    assert len(ids) < 2000  # merges compress
    assert tok.decode(ids) == text[:2000]
    # token_bytes is exact, so byte counts (for bits per byte) add up to the UTF-8 length
    assert token_byte_lengths(tok)[ids].sum() == len(text[:2000].encode())
    tok.save(tmp_path / "tokenizer.json")
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert np.array_equal(again.encode(text[:2000]), ids)


@pytest.mark.parametrize("spec", ["bytes", "bpe:", "bpe:100", "bpe:x", "wordpiece:500"])
def test_bad_tokenizer_spec(spec):
    with pytest.raises(ValueError, match="tokenizer"):
        validate_spec(spec)


def test_split_is_deterministic_and_at_a_line_start():
    text = "".join(f"line {i}\n" for i in range(1000))
    train, val = split_text(text, 0.1)
    assert train + val == text and val.startswith("line ") and train.endswith("\n")
    assert split_text(text, 0.1) == (train, val)
    assert 0.08 < len(val) / len(text) < 0.12


def test_tokens_are_cached_by_content(text_file, tmp_path):
    splits, tok = prepare_tokens([str(text_file)], "byte", 0.1)
    cache = list((tmp_path / "cache" / "tokens").glob("*.bin"))
    assert len(cache) == 2 and isinstance(splits.train, np.memmap)
    assert tok.decode(np.concatenate([splits.train, splits.val])) == text_file.read_text()
    again, _ = prepare_tokens([str(text_file)], "byte", 0.1)
    assert np.array_equal(again.train, splits.train)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.bin"))) == 2
    text_file.write_text(text_file.read_text() + "Exeunt.\n")  # new content, new cache entry
    prepare_tokens([str(text_file)], "byte", 0.1)
    assert len(list((tmp_path / "cache" / "tokens").glob("*.bin"))) == 4


def test_jsonl_globs_and_bin_sources(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"text": "Hark! " * 200}) + "\n" + json.dumps({"text": "Peace."}) + "\n"
    )
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "Good night, sweet prince. " * 50}) + "\n")
    splits, tok = prepare_tokens([str(tmp_path / "*.jsonl")], "byte", 0.2)
    joined = tok.decode(np.concatenate([splits.train, splits.val]))
    assert joined.startswith("Hark!") and "Peace.\n\nGood night" in joined
    ids = np.arange(1000, dtype="<u2") % 256
    ids.tofile(tmp_path / "ids.bin")
    splits, _ = prepare_tokens([str(tmp_path / "ids.bin")], "byte", 0.1)
    assert np.array_equal(np.concatenate([splits.train, splits.val]), ids)


def test_bad_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        prepare_tokens([str(tmp_path / "missing.txt")], "byte", 0.1)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        prepare_tokens([str(tmp_path / "empty.txt")], "byte", 0.1)
    (tmp_path / "garbage.txt").write_bytes(bytes(range(128, 256)) * 10)
    with pytest.raises(ValueError, match="not UTF-8 text"):
        prepare_tokens([str(tmp_path / "garbage.txt")], "byte", 0.1)
    (tmp_path / "nul.txt").write_bytes(b"\x7fELF\x00\x00\x01" * 50)
    with pytest.raises(ValueError, match="binary"):
        prepare_tokens([str(tmp_path / "nul.txt")], "byte", 0.1)
    np.array([1, 2, 300, 4], dtype="<u2").tofile(tmp_path / "big.bin")
    with pytest.raises(ValueError, match="token id 300, beyond the tokenizer's vocabulary of 256"):
        prepare_tokens([str(tmp_path / "big.bin")], "byte", 0.1)
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        prepare_tokens([str(tmp_path / "bad.jsonl")], "byte", 0.1)
    with pytest.raises(ValueError, match="bpe:300 must be trained on text"):
        prepare_tokens([str(tmp_path / "big.bin")], "bpe:300", 0.1)


def test_corpus_shorter_than_one_sequence(tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be.\n" * 3)
    splits, _ = prepare_tokens([str(tmp_path / "short.txt")], "byte", 0.3)
    with pytest.raises(ValueError, match="fewer than one sequence"):
        TokenLoader(splits.train, seq_len=128, batch_size=2, seed=0)


def test_loader_windows_are_contiguous_and_cover_an_epoch():
    tokens = np.arange(1 + 10 * 8, dtype=np.uint16)  # exactly 10 windows of 8
    loader = TokenLoader(tokens, seq_len=8, batch_size=5, seed=3)
    seen = []
    for _ in range(2):
        x, y = loader.next_batch()
        assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y - x, torch.ones_like(x))
        seen += (x[:, 0] // 8).tolist()
    assert sorted(seen) == list(range(10))  # one epoch visits every window once
    assert loader.state_dict()["position"] == 10


def test_loader_resumes_on_the_next_unseen_batch():
    tokens = np.arange(5000, dtype=np.uint16) % 256
    straight = TokenLoader(tokens, 16, 4, seed=1)
    batches = [straight.next_batch()[0] for _ in range(30)]  # crosses epoch boundaries (312 windows)
    first = TokenLoader(tokens, 16, 4, seed=1)
    for _ in range(17):
        first.next_batch()
    resumed = TokenLoader(tokens, 16, 4, seed=1)
    resumed.load_state_dict(first.state_dict())
    assert all(torch.equal(resumed.next_batch()[0], b) for b in batches[17:])
    with pytest.raises(ValueError, match="training data changed"):
        TokenLoader(tokens[:4000], 16, 4, seed=1).load_state_dict(first.state_dict())


def test_ranks_split_the_global_batch():
    tokens = np.arange(3000, dtype=np.uint16) % 256
    whole = TokenLoader(tokens, 16, 4, seed=2)
    ranks = [TokenLoader(tokens, 16, 2, seed=2, rank=r, world_size=2) for r in range(2)]
    for _ in range(3):
        assert torch.equal(whole.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))


def test_eval_batches_cover_the_stream_once_across_ranks():
    tokens = np.arange(1 + 16 * 11, dtype=np.uint16)
    per_rank = [[x for x, _ in eval_batches(tokens, 16, 3, None, r, 2)] for r in range(2)]
    starts = sorted(int(row[0]) for batches in per_rank for x in batches for row in x)
    assert starts == [16 * w for w in range(11)]


def test_builtin_is_the_default_source():
    splits, tok = prepare_tokens([BUILTIN], "byte", 0.05)
    assert tok.vocab_size == 256 and len(splits.train) > 4_000_000 and len(splits.val) > 200_000
