"""Which parameters get no gradient at a training length, and what `dist.wrap` makes of a model."""

import pytest
import torch
import torch.distributed as td
import torch.nn.functional as F

import hope
from hope import distributed as dist
from hope.config import PRESETS

# Tiny's CMS chunks are (16, 64): at 16 no level steps inside the sequence, at 32 and 64 the slower
# one does not (at 64 it steps after the last token), at 65 both do.
LENGTHS = [16, 32, 64, 65]
CASES = [(name, {}) for name in PRESETS] + [("hope", {"cms.error": "lm"})]


def _model(name, **over):
    torch.manual_seed(0)
    return hope.build_model(hope.ModelConfig.preset(name, d_model=32, **over))


@pytest.mark.parametrize("name,over", CASES, ids=[n + ("-lm" if o else "") for n, o in CASES])
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_unused_parameters_are_exactly_those_without_a_gradient(name, over, seq_len):
    model = _model(name, **over)
    ids = torch.randint(
        0, model.config.vocab_size, (2, seq_len + 1), generator=torch.Generator().manual_seed(0)
    )
    logits, _ = model(ids[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    # DDP tracks trainable parameters only; the DeltaNet family's zero initial memories are frozen
    without = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    assert set(model.unused_parameters(seq_len)) == without


@pytest.fixture
def one_process_group():
    td.init_process_group("gloo", store=td.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        td.destroy_process_group()


@pytest.mark.parametrize(
    "name,seq_len,expected", [("transformer", 32, False), ("hope", 32, True), ("hope", 65, False)]
)
def test_ddp_looks_for_unused_parameters_only_where_there_are_some(
    name, seq_len, expected, one_process_group
):
    ddp = dist.wrap(_model(name), torch.device("cpu"), fsdp=False, seq_len=seq_len)
    assert ddp.find_unused_parameters is expected


def test_fsdp_refuses_cms_learning_from_the_lm_loss(one_process_group):
    with pytest.raises(ValueError, match="cms.error='lm' does not run under FSDP2"):
        dist.wrap(_model("hope", **{"cms.error": "lm"}), torch.device("cpu"), fsdp=True, seq_len=32)
