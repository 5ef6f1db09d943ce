"""HopeForCausalLM: Auto classes, save/load round trip, generate() == our streaming generation."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hope.config import PRESETS
from hope.data.tokenizer import ByteTokenizer
from hope.generate import stream
from hope.hf import HopeConfig, HopeForCausalLM, byte_tokenizer, hf_tokenizer

SMALL = {"d_model": 32, "n_layers": 1}


def tiny(preset="hope", **overrides):
    torch.manual_seed(0)
    return HopeForCausalLM(HopeConfig.from_preset(preset, **SMALL, **overrides)).eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_auto_classes_round_trip_every_preset(preset, tmp_path):
    model = tiny(preset)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hope"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HopeConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HopeForCausalLM) and loaded.config.model == model.config.model
    ids = torch.randint(0, 256, (2, 24))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    if model.config.tie_word_embeddings:
        assert loaded.model.head.weight is loaded.model.embed.weight


def test_state_continues_the_stream_and_labels_give_the_shifted_loss():
    model = tiny()
    ids = torch.randint(0, 256, (2, 40))
    with torch.no_grad():
        whole = model(ids, labels=ids)
        first = model(ids[:, :13])
        rest = model(ids[:, 13:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), whole.logits, rtol=0, atol=1e-5)
    expected = torch.nn.functional.cross_entropy(
        whole.logits[:, :-1].reshape(-1, 256), ids[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(whole.loss, expected)
    assert model(ids, use_cache=False).state is None


class RecordingTokenizer(ByteTokenizer):
    """Our byte tokenizer, remembering the ids `stream` generates (it asks for each one's bytes)."""

    def __init__(self):
        self.ids = []

    def token_bytes(self, token_id):
        self.ids.append(token_id)
        return super().token_bytes(token_id)


def ours(model, prompt, n, **sampling):
    tok = RecordingTokenizer()
    "".join(stream(model.model, tok, prompt, n, **sampling))
    return tok.ids


@pytest.mark.parametrize("preset", ["hope", "transformer"])
def test_greedy_generate_equals_our_streaming_generation(preset):
    model = tiny(preset)
    prompts = ["ROMEO: ", "JULIET:"]  # equal lengths: a batch without padding
    batch = byte_tokenizer()(prompts, return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    for row, prompt in zip(out, prompts):
        assert row[: len(prompt)].tolist() == list(prompt.encode())
        assert row[len(prompt) :].tolist() == ours(model, prompt, 12, temperature=0)
    # Without the cache every step re-reads the whole sequence: the same tokens.
    assert torch.equal(model.generate(**batch, max_new_tokens=12, do_sample=False, use_cache=False), out)


def test_sampling_generate_equals_our_streaming_generation_with_the_same_seed():
    model = tiny()
    batch = byte_tokenizer()("ROMEO:", return_tensors="pt")
    torch.manual_seed(7)
    out = model.generate(**batch, max_new_tokens=12, do_sample=True, temperature=0.8, top_k=0, top_p=1.0)
    expected = ours(model, "ROMEO:", 12, temperature=0.8, generator=torch.Generator().manual_seed(7))
    assert out[0, 6:].tolist() == expected
    assert len(set(expected)) > 1  # sampled, not a constant


def test_a_run_byte_tokenizer_file_becomes_the_byte_tokenizer(tmp_path):
    ByteTokenizer().save(tmp_path / "tokenizer.json")
    assert hf_tokenizer(tmp_path / "tokenizer.json")("é!", add_special_tokens=False)["input_ids"] == [
        195,
        169,
        33,
    ]


def test_the_core_package_does_not_import_transformers():
    code = "import sys, hope, hope.cli; hope.cli.build_parser(); print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_byte_tokenizer_has_our_ids():
    tok, ours_ = byte_tokenizer(), ByteTokenizer()
    text = "Hello, wörld! 日本語\n\n  tabs\t😀 ROMEO:"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == ours_.encode(text).tolist() and tok.decode(ids) == text
    assert len(tok) == 256


def test_bad_input_is_one_clear_error(tmp_path):
    model = tiny()
    with pytest.raises(ValueError, match="does not support padding"):
        model(torch.ones(1, 4, dtype=torch.long), attention_mask=torch.tensor([[0, 1, 1, 1]]))
    with pytest.raises(ValueError, match="not beam search"):
        model.generate(torch.ones(1, 4, dtype=torch.long), num_beams=2, max_new_tokens=2)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "preset": "hopeless"}))
    with pytest.raises(ValueError, match="unknown preset 'hopeless'"):
        AutoModelForCausalLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "preset": "transformer"}))
    with pytest.raises(ValueError, match="does not match the model's own name 'hope'"):
        AutoConfig.from_pretrained(tmp_path)
