"""benchmarks/flops.py counts what FlopCounterMode misses (the UT solve, grouped convolutions' backward)
by their formulas, and a Transformer++ block's count equals 6 FLOPs per weight per token; and
benchmarks/speed.py reads config overrides from its --impls entries."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

_ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", _ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flops():
    return _load("flops")


def test_the_triangular_solve_counts_n_squared_m(flops):
    a = torch.eye(8).expand(2, 8, 8) + torch.randn(2, 8, 8).tril(-1)
    b = torch.randn(2, 8, 3)
    with FlopCounterMode(display=False, custom_mapping=flops.CUSTOM) as counter:
        torch.linalg.solve_triangular(a, b, upper=False, unitriangular=True)
    assert counter.get_total_flops() == 2 * 8 * 8 * 3


def test_a_depthwise_convolutions_backward_costs_its_forward_per_gradient(flops):
    conv = torch.nn.Conv1d(6, 6, kernel_size=4, groups=6, padding=3, bias=False)
    x = torch.randn(2, 6, 10, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=flops.CUSTOM) as forward:
        y = conv(x)
    with FlopCounterMode(display=False, custom_mapping=flops.CUSTOM) as backward:
        y.sum().backward()
    assert forward.get_total_flops() == 2 * 2 * y.shape[-1] * 6 * 4
    assert backward.get_total_flops() == 2 * forward.get_total_flops()


def test_a_transformer_block_costs_six_flops_per_weight_and_token(flops):
    row = flops.count_preset("transformer", "tiny", seq_len=32, vocab_size=64, checkpoint=True)
    import hope

    cfg = hope.ModelConfig.preset("transformer", size="tiny", vocab_size=64)
    block = hope.build_model(cfg).blocks[0]
    for part in ("mixer", "ffn"):
        weights = sum(
            m.weight.numel() for m in getattr(block, part).modules() if isinstance(m, torch.nn.Linear)
        )
        assert row["parts_per_block"][part]["forward"] * 1e6 == pytest.approx(2 * weights)
        assert row["parts_per_block"][part]["total"] * 1e6 == pytest.approx(6 * weights)
    per_block = sum(p["total"] for p in row["parts_per_block"].values())
    assert row["total"] == pytest.approx(cfg.n_layers * per_block + 6 * cfg.d_model * 64 / 1e6)


def test_a_hope_block_counts_its_memories_and_the_recompute(flops):
    kept = flops.count_preset("hope", "tiny", seq_len=32, vocab_size=64, checkpoint=False)
    recomputed = flops.count_preset("hope", "tiny", seq_len=32, vocab_size=64, checkpoint=True)
    mixer, again = kept["parts_per_block"]["mixer"], recomputed["parts_per_block"]["mixer"]
    assert mixer["forward"] == pytest.approx(again["forward"])
    # the recompute repeats the forward's chunk work inside the backward, projections excluded
    assert mixer["backward"] < again["backward"] < mixer["backward"] + mixer["forward"] + 1e-9


def test_speed_impls_carry_config_overrides():
    speed = _load("speed")
    assert speed.parse_impl("auto") == ("auto", False, {})
    assert speed.parse_impl("auto+graphs:titans.boundary_every=4:cms.expansion=0.5") == (
        "auto",
        True,
        {"titans.boundary_every": 4, "cms.expansion": 0.5},
    )
    with pytest.raises(SystemExit, match="key=value"):
        speed.parse_impl("auto:titans.boundary_every")
    cfg = speed.model_config("hope", "tiny", "chunked", 64, {"titans.boundary_every": 4})
    assert cfg.titans.boundary_every == 4 and cfg.impl == "chunked"


def test_speed_reads_counted_flops_for_the_rows_they_match(tmp_path):
    import json

    speed = _load("speed")
    counted = {
        "size": "125m",
        "seq_len": 4096,
        "vocab_size": 32000,
        "rows": [{"preset": "hope", "total": 1500.0}],
    }
    path = tmp_path / "flops.json"
    path.write_text(json.dumps(counted))
    counts = speed.counted_flops(str(path))
    row = {"preset": "hope", "seq_len": 4096, "tokens_per_s": 20_000.0}
    assert speed.add_counted_mfu(row, counts, "125m", 32000, 1000.0)["mfu_counted"] == pytest.approx(0.03)
    for other in (
        {**row, "seq_len": 16384},
        {**row, "preset": "titans"},
        {"preset": "hope", "seq_len": 4096},
    ):
        assert "mfu_counted" not in speed.add_counted_mfu(other, counts, "125m", 32000, 1000.0)
    assert "mfu_counted" not in speed.add_counted_mfu(row, counts, "350m", 32000, 1000.0)
