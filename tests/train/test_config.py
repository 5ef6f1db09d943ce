import itertools
import math

import pytest

from hope.train import TrainConfig


def test_defaults_are_the_quick_hope_preset_on_the_builtin_corpus():
    cfg = TrainConfig()
    assert (cfg.preset, cfg.size, cfg.data, cfg.tokenizer) == ("hope", "quick", ["builtin"], "byte")
    model = cfg.model_config(256)
    assert model.block == "hope" and model.vocab_size == 256
    assert (model.d_model, model.n_layers, model.titans.chunk_size) == (64, 1, 32)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"seq_len": 0}, "train.seq_len"),
        ({"batch_size": 6, "grad_accum": 4}, "train.batch_size"),
        ({"precision": "fp16"}, "train.precision"),
        ({"optimizer": "sgd"}, "train.optimizer"),
        ({"preset": "gpt"}, "train.preset"),
        ({"size": "huge"}, "train.size"),
        ({"tokenizer": "bpe:12"}, "tokenizer bpe:N"),
        ({"lr": -1.0}, "train.lr"),
        ({"lr": math.nan}, "train.lr"),
        ({"val_fraction": 0.0}, "train.val_fraction"),
        ({"steps": 10, "tokens": 1000}, "train.steps and train.tokens"),
        ({"steps": 10, "minutes": 1.0}, "train.steps and train.minutes"),
        ({"minutes": 0.0}, "train.minutes"),
        ({"minutes": math.inf}, "train.minutes"),
        ({"steps": 10, "warmup_steps": 10}, "train.warmup_steps"),
        ({"data": []}, "train.data"),
        ({"seed": True}, "train.seed"),
        ({"cuda_graphs": True, "device": "cpu"}, "train.cuda_graphs"),
        ({"cuda_graphs": True, "fsdp": True}, "train.cuda_graphs"),
    ],
)
def test_invalid_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        TrainConfig(**changes)


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_tokens_set_the_step_count_and_batch_splits():
    cfg = TrainConfig(tokens=10_000, batch_size=8, seq_len=128, grad_accum=2)
    assert cfg.total_steps == 10  # ceil(10000 / 1024)
    assert cfg.micro_batch(2) == 2
    with pytest.raises(ValueError, match="split evenly over 3 processes"):
        cfg.micro_batch(3)


def test_round_trip():
    cfg = TrainConfig(model_overrides={"titans.chunk_size": 16}, steps=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown train field"):
        TrainConfig.from_dict({"learning_rate": 1.0})


def test_optimizer_hyperparameters_are_checked_against_the_optimizer():
    cfg = TrainConfig(optimizer="m3", optimizer_args={"frequency": 4, "betas": [0.9, 0.99, 0.5]})
    assert TrainConfig.from_dict(cfg.to_dict()).optimizer_args == cfg.optimizer_args
    with pytest.raises(ValueError, match=r"optimizer_args \['momentum'\] are not hyper-parameters of m3"):
        TrainConfig(optimizer="m3", optimizer_args={"momentum": 0.9})


def test_cli_routes_optim_options_to_the_optimizer(tmp_path):
    import torch

    from hope.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "transformer",
                "--steps",
                "2",
                "--seq-len",
                "16",
                "--batch-size",
                "2",
                "--optimizer",
                "m3",
                "--optim.frequency",
                "1",
                "--optim.alpha",
                "0.25",
                "--eval-every",
                "0",
                "--sample-tokens",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    ckpt = max((out / "checkpoints").iterdir())
    state = torch.load(ckpt / "optimizer.pt", weights_only=False)
    groups = state["param_groups"]
    assert any(g.get("frequency") == 1 and g.get("alpha") == 0.25 for g in groups)
