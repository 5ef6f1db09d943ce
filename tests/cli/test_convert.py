"""`hope convert` (§7.3): a trained transformer run becomes a HOPE-Attention run that computes the same
logits, continues with `hope train --resume`, samples with `hope generate`; bad input is one clear error."""

import json
import shutil

import pytest
import torch
from tiny_run import train_argv

from hope.cli import main
from hope.data import builtin_text
from hope.train import load_for_inference


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    corpus = root / "corpus.txt"
    corpus.write_text(builtin_text()[:30_000])
    with pytest.MonkeyPatch.context() as mp:  # module-scoped: the autouse cache fixture is not yet set
        mp.setenv("HOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hope-cache"))
        assert main(["train", *train_argv(steps=2), "--data", str(corpus), "--out", str(root / "run")]) == 0
    return root / "run"


def _logits(run, ids):
    model, _, _, step = load_for_inference(run)
    with torch.no_grad():
        return model(ids)[0], model, step


def _optimizer_state(run):
    ckpt = max((run / "checkpoints").iterdir())
    return torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]


def _train_loss(run, step):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r["loss"] for r in records if r["split"] == "train" and r["step"] == step)


def test_converted_run_computes_the_transformers_logits_and_continues(transformer_run, tmp_path, capsys):
    out = tmp_path / "hope"
    assert main(["convert", "--run", str(transformer_run), "--out", str(out), "--cms.error", "none"]) == 0
    assert "step 2" in capsys.readouterr().err and not list(tmp_path.glob(".*"))
    ids = torch.randint(0, 256, (2, 80), generator=torch.Generator().manual_seed(0))
    expected, _, _ = _logits(transformer_run, ids)
    got, model, step = _logits(out, ids)
    assert step == 2 and model.config.block == "hope_attention" and model.config.cms.level == "swiglu"
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["preset"] == "hope-attention"
    assert config["converted_from"] == {"run": str(transformer_run), "step": 2}
    # Same data position as the transformer's checkpoint: resuming continues on the same tokens.
    record = json.loads(next((out / "checkpoints").iterdir()).joinpath("state.json").read_text())
    source = json.loads(next((transformer_run / "checkpoints").iterdir()).joinpath("state.json").read_text())
    assert record["data"] == source["data"]
    # Trained parameters keep their optimizer state; the faster level's new W_d starts fresh.
    moments = _optimizer_state(out)
    trained = _optimizer_state(transformer_run)
    torch.testing.assert_close(moments["blocks.0.mixer.qkv.weight"], trained["blocks.0.mixer.qkv.weight"])
    gate, up = trained["blocks.0.ffn.gate_up.weight"]["exp_avg"].chunk(2)
    assert torch.equal(moments["blocks.0.ffn.w_gate.1"]["exp_avg"], gate)
    assert torch.equal(moments["blocks.0.ffn.w_up.1"]["exp_avg"], up)
    assert torch.equal(
        moments["blocks.0.ffn.w_down.1"]["exp_avg"], trained["blocks.0.ffn.down.weight"]["exp_avg"]
    )
    assert not moments["blocks.0.ffn.w_down.0"]["exp_avg"].any()
    assert not moments["blocks.0.ffn.w_gate.0"]["exp_avg"].any()

    # Resumed side by side, both take their next step on the same batch, at the same loss.
    copy = tmp_path / "transformer"
    shutil.copytree(transformer_run, copy)
    assert main(["train", "--resume", str(copy), "--steps", "3"]) == 0
    assert main(["train", "--resume", str(out), "--steps", "3"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002", "step_00000003"]
    assert _train_loss(out, 3) == pytest.approx(_train_loss(copy, 3), rel=1e-6)
    capsys.readouterr()
    argv = ["generate", "--run", str(out), "--prompt", "RO", "--max-tokens", "5", "--temperature", "0"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("RO")


def test_default_conversion_learns_in_context_after_the_first_segment(transformer_run, tmp_path):
    out = tmp_path / "hope"
    assert (
        main(["convert", "--run", str(transformer_run), "--out", str(out), "--cms.chunk_sizes", "8,32"]) == 0
    )
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(0))
    expected, _, _ = _logits(transformer_run, ids)
    got, model, _ = _logits(out, ids)
    assert model.config.cms.error == "local" and model.config.cms.chunk_sizes == (8, 32)
    torch.testing.assert_close(got[:, :8], expected[:, :8], rtol=0, atol=1e-6)
    assert (got[:, 8:] - expected[:, 8:]).abs().max() > 1e-4


def test_converted_run_exports(transformer_run, tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from hope.hf.export import export_run

    main(["convert", "--run", str(transformer_run), "--out", str(tmp_path / "hope"), "--cms.error", "none"])
    hf, _ = export_run(tmp_path / "hope", tmp_path / "hf")
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(hf).eval()(ids).logits
    torch.testing.assert_close(logits, _logits(transformer_run, ids)[0], rtol=0, atol=1e-6)


def test_convert_errors(transformer_run, tmp_path, capsys):
    def fails(run, message, *options, out=tmp_path / "x"):
        with pytest.raises(SystemExit) as exit_:
            main(["convert", "--run", str(run), "--out", str(out), *options])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert message in err, err

    converted = tmp_path / "hope"
    assert main(["convert", "--run", str(transformer_run), "--out", str(converted)]) == 0
    fails(converted, "is a 'hope-attention' run (hope_attention blocks); convert turns a Transformer++ run")
    no_ckpt = tmp_path / "no-ckpt"
    no_ckpt.mkdir()
    shutil.copy(transformer_run / "config.json", no_ckpt / "config.json")
    fails(no_ckpt, "has no complete checkpoint")
    fails(tmp_path / "nowhere", "no run directory at")
    fails(transformer_run, "already exists and is not an empty directory", out=converted)
    fails(
        transformer_run, "convert takes cms.* options only, not titans.chunk_size", "--titans.chunk_size", "4"
    )
    fails(transformer_run, "not cms.level (cms.level, cms.expansion are fixed)", "--cms.level", "residual")
    fails(
        transformer_run,
        "cms.error must be one of ['lm', 'local', 'none'], got 'often'",
        "--cms.error",
        "often",
    )
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))


def test_convert_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and all(
        w in out for w in ("--run", "--out", "slowest CMS level", "--cms.error")
    )
