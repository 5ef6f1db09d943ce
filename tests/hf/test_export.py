"""`hope export`: a run directory becomes a save_pretrained folder that computes what the run computes."""

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hope.hf.export import export_run
from hope.train import load_for_inference


def test_export_round_trip(bpe_run, tmp_path):
    out, step = export_run(bpe_run, tmp_path / "hf")
    assert step == 1 and not list(tmp_path.glob(".*"))  # no temporary folder left beside it
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ours, ours_tokenizer, _, _ = load_for_inference(bpe_run)
    assert model.config.preset == "transformer" and model.config.model["d_model"] == 32
    text = "ROMEO: But soft, what light through yonder window breaks?\n\nJULIET: Ay me!"
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == ours_tokenizer.encode(text).tolist()
    assert tokenizer.decode(ids[0]) == text
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ours(ids)[0])


def test_cli_export_and_its_errors(bpe_run, tmp_path, capsys):
    from hope.cli import main

    assert main(["export", "--run", str(bpe_run), "--out", str(tmp_path / "hf")]) == 0
    assert "step 1" in capsys.readouterr().err

    def fails(run, out, message):
        with pytest.raises(SystemExit) as exit_:
            main(["export", "--run", str(run), "--out", str(out)])
        assert exit_.value.code == 2 and message in capsys.readouterr().err

    fails(bpe_run, tmp_path / "hf", "already exists and is not an empty directory")
    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    shutil.copy(bpe_run / "config.json", no_ckpt / "config.json")
    fails(no_ckpt, tmp_path / "x", "has no complete checkpoint")
    fails(tmp_path / "nowhere", tmp_path / "x", "no run directory at")
    bad = tmp_path / "bad"
    shutil.copytree(bpe_run, bad)
    config = json.loads((bad / "config.json").read_text())
    config["model"]["name"] = "transformer-xl"
    (bad / "config.json").write_text(json.dumps(config))
    fails(bad, tmp_path / "x", "unknown preset 'transformer-xl'")
    assert not (tmp_path / "x").exists()
