"""The training loop on tiny models: run directory, exact resume, divergence, atomic saves."""

import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hope
from hope.config import PRESETS
from hope.train import TrainingDiverged, load_for_inference, load_train_config, loop, train
from hope.train import checkpoint as ckpt_mod
from hope.train.checkpoint import latest_checkpoint, list_checkpoints
from hope.train.metrics import read_metrics


def _train_losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir) if r["split"] == "train"]


def _weights(run_dir):
    return load_file(latest_checkpoint(run_dir) / "model.safetensors")


def test_run_directory_holds_everything(tiny_cfg):
    result = train(tiny_cfg(sample_tokens=20))
    run = result.run_dir
    config = json.loads((run / "config.json").read_text())
    assert (
        config["train"]["steps"] == 8
        and config["model"]["d_model"] == 32
        and config["model"]["vocab_size"] == 256
    )
    for name in ("metrics.jsonl", "loss.png", "tokenizer.json"):
        assert (run / name).stat().st_size > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in list_checkpoints(run)] == ["step_00000004", "step_00000008"]
    records = read_metrics(run)
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 9))
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [4, 8] and val[-1] == {"step": 8, "split": "val", **result.val}
    assert result.val["ppl"] == pytest.approx(torch.tensor(result.val["loss"]).exp().item(), rel=1e-6)
    assert result.val["loss"] < _train_losses(run)[0][1]  # it learned something
    assert len(result.sample) > 0
    _, tok, cfg, step = load_for_inference(run)
    assert step == 8 and cfg.steps == 8 and tok.vocab_size == 256


@pytest.mark.parametrize("preset", list(PRESETS))
def test_resume_is_bit_exact(preset, tiny_cfg, monkeypatch):
    # seq_len 32 is below tiny's longest CMS chunk (64): that level never steps, so its read-outs get no
    # gradient and no optimizer state, and the resumed run must leave them without one too.
    tiny_cfg = functools.partial(tiny_cfg, preset=preset)
    straight = train(tiny_cfg("straight"))

    class Crash(Exception):
        pass

    real_save = loop.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash  # the process dies right after its first checkpoint (step 4)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train(tiny_cfg("halves"))
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    halves = train(load_train_config(tiny_cfg("halves").out), resume=True)

    assert _train_losses(halves.run_dir) == _train_losses(straight.run_dir)
    assert halves.val == {**straight.val, "tok_per_s": halves.val["tok_per_s"]}
    a, b = _weights(straight.run_dir), _weights(halves.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    optim_a = torch.load(latest_checkpoint(straight.run_dir) / "optimizer.pt", weights_only=True)
    optim_b = torch.load(latest_checkpoint(halves.run_dir) / "optimizer.pt", weights_only=True)
    assert optim_a["state"].keys() == optim_b["state"].keys()
    for k, state in optim_a["state"].items():
        assert all(torch.equal(state[s], optim_b["state"][k][s]) for s in state), k


def test_a_cms_level_that_never_steps_in_training_is_named(tiny_cfg, capsys):
    train(tiny_cfg("short", preset="hope", steps=1, eval_every=0, save_every=0))
    assert "CMS level(s) of chunk size 64 never step before the end of a 32-token" in capsys.readouterr().err
    train(tiny_cfg("long", preset="hope", seq_len=65, steps=1, eval_every=0, save_every=0))
    assert "never step" not in capsys.readouterr().err


def test_resume_of_a_finished_run_asks_for_more_steps(tiny_cfg):
    cfg = tiny_cfg(steps=2, save_every=0, eval_every=0)
    train(cfg)
    with pytest.raises(ValueError, match="already finished its 2 steps"):
        train(load_train_config(cfg.out), resume=True)
    extended = load_train_config(cfg.out)
    extended.steps = 3
    assert train(extended, resume=True).step == 3


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cfg):
    # An absurd learning rate with no warm-up blows the weights up within a few steps.
    cfg = tiny_cfg(lr=1e30, warmup_steps=0, save_every=1, grad_clip=0.0, weight_decay=0.0)
    with pytest.raises(TrainingDiverged) as failure:
        train(cfg)
    bad_step = int(re.search(r"non-finite training loss .* at step (\d+);", str(failure.value)).group(1))
    last_good = f"step_{bad_step - 1:08d}"
    assert last_good in str(failure.value)
    assert list_checkpoints(cfg.out)[-1].name == last_good
    assert all(torch.isfinite(w).all() for w in _weights(cfg.out).values())
    assert max(r["step"] for r in read_metrics(cfg.out)) == bad_step - 1


def test_a_failed_save_leaves_the_previous_checkpoint(tiny_cfg, monkeypatch):
    cfg = tiny_cfg(steps=8, save_every=4, eval_every=0)
    calls = []

    def failing_save_file(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"half a file")
            raise OSError("disk full")
        return real(tensors, path, metadata=metadata)

    real = ckpt_mod.save_file
    monkeypatch.setattr(ckpt_mod, "save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        train(cfg)
    assert [p.name for p in list_checkpoints(cfg.out)] == ["step_00000004"]
    _, _, _, step = load_for_inference(cfg.out)
    assert step == 4
    leftovers = list((Path(cfg.out) / "checkpoints").glob(".tmp-*"))
    assert len(leftovers) == 1  # the half-written save stays hidden, and the next save clears it
    monkeypatch.setattr(ckpt_mod, "save_file", real)
    assert train(load_train_config(cfg.out), resume=True).step == 8
    assert not list((Path(cfg.out) / "checkpoints").glob(".tmp-*"))


def test_tied_embeddings_round_trip_through_safetensors(tmp_path):
    model = hope.build_model(hope.ModelConfig.preset("transformer", vocab_size=64, d_model=32, n_layers=1))
    optimizer = torch.optim.AdamW(model.parameters())
    ckpt = ckpt_mod.save_checkpoint(tmp_path, 3, model, optimizer, {"data": {}}, keep=1)
    fresh = hope.build_model(hope.ModelConfig.preset("transformer", vocab_size=64, d_model=32, n_layers=1))
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    ckpt_mod.load_weights(ckpt, fresh)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_grad_accumulation_matches_the_full_batch(tiny_cfg):
    whole = train(tiny_cfg("whole", steps=3, eval_every=0, save_every=0))
    accumulated = train(tiny_cfg("accum", steps=3, eval_every=0, save_every=0, grad_accum=2))
    assert [l for _, l in _train_losses(accumulated.run_dir)] == pytest.approx(
        [l for _, l in _train_losses(whole.run_dir)], rel=1e-5
    )


def test_bpe_run_saves_its_tokenizer_and_reports_bits_per_byte(tiny_cfg):
    result = train(tiny_cfg(tokenizer="bpe:320", steps=2, eval_every=0, save_every=0, precision="bf16"))
    _, tok, _, _ = load_for_inference(result.run_dir)
    assert tok.vocab_size == 320
    assert json.loads((result.run_dir / "config.json").read_text())["model"]["vocab_size"] == 320
    # BPE tokens cover more than one byte each, so bits per byte is below bits per token.
    assert 0 < result.val["bpb"] < result.val["loss"] / 0.6931


@pytest.mark.parametrize("optimizer", ["muon", "m3", "dgd"])
def test_nested_learning_optimizers_train_and_resume(optimizer, tiny_cfg):
    cfg = tiny_cfg(optimizer, optimizer=optimizer, lr=1e-2, steps=4, save_every=2, eval_every=0)
    straight = train(cfg)
    assert all(torch.isfinite(w).all() for w in _weights(straight.run_dir).values())
    resumed_dir = tiny_cfg(optimizer + "-resumed").out
    shutil.copytree(straight.run_dir, resumed_dir)
    shutil.rmtree(Path(resumed_dir) / "checkpoints" / "step_00000004")  # back to the step-2 checkpoint
    resumed = train(load_train_config(resumed_dir), resume=True)
    a, b = _weights(straight.run_dir), _weights(resumed.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)  # optimizer state (momenta etc.) round-trips exactly


def test_resume_drops_log_lines_past_the_checkpoint_and_a_torn_last_line(tmp_path):
    from hope.train.metrics import MetricsLogger

    (tmp_path / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "split": "train", "loss": 1.0 / s}) + "\n" for s in range(1, 6))
        + '{"step": 6, "spl'
    )
    logger = MetricsLogger(tmp_path, resume_step=3)
    logger.log({"step": 4, "split": "train", "loss": 0.5})
    logger.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0),
        (2, 0.5),
        (3, 1 / 3),
        (4, 0.5),
    ]


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    path.write_bytes(b"\x00garbage" * 100)


@pytest.mark.parametrize(
    "name,damage",
    [("model.safetensors", _truncate), ("model.safetensors", _garbage), ("optimizer.pt", Path.unlink)],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tiny_cfg, capsys, name, damage):
    """Resume and inference both take the newest intact checkpoint and name the damaged one."""
    run = train(tiny_cfg()).run_dir
    newest = list_checkpoints(run)[-1]
    damage(newest / name)
    capsys.readouterr()
    _, _, _, step = load_for_inference(run)
    assert step == 4
    assert f"checkpoint {newest.name} is damaged" in capsys.readouterr().err
    resumed = train(load_train_config(run), resume=True)
    assert resumed.step == 8  # from step 4 to the configured 8 again


def test_no_intact_checkpoint_is_a_clear_error(tiny_cfg):
    run = train(tiny_cfg()).run_dir
    for ckpt in list_checkpoints(run):
        _garbage(ckpt / "model.safetensors")
    with pytest.raises(
        ckpt_mod.CheckpointError, match="no intact checkpoint.*step_00000008: model.safetensors"
    ):
        load_for_inference(run)
