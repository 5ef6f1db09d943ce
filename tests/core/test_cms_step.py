"""The Triton read of a CMS level for one token (hope.ops.cms_step) equals the PyTorch read, and a CMS
decoded through it equals its forward. Without a GPU the kernels run in Triton's interpreter."""

import pytest
import torch

from hope import ModelConfig, build_model
from hope.layers.cms import ContinuumMemory
from hope.memory import core
from hope.models.decode import Decoder
from hope.ops import cms_step

D64 = torch.float64
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# every loop walks several blocks (the interpreter's time grows with the programs a launch has)
SMALL_TILES = {"rows_up": 16, "rows_down": 8, "block": 8, "num_warps": 1}


def _weights(b, d, f, dtype, shared=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = () if shared else (b,)
    return (
        torch.randn(*lead, f, d, generator=g, dtype=D64).div(d**0.5).to(DEVICE, dtype),
        torch.randn(*lead, d, f, generator=g, dtype=D64).div(f**0.5).to(DEVICE, dtype),
    )


def _read(z, w, activation):
    """The level's read in PyTorch (`core.forward` of a residual MLP memory)."""
    d, f = z.shape[-1], w[0].shape[-2]
    return core.forward(core.MemorySpec("mlp", d, d, hidden=f, depth=2, activation=activation), w, z)[0]


@pytest.mark.parametrize("activation", ["gelu", "silu"])
@pytest.mark.parametrize("shared", [False, True], ids=["fast-weights", "frozen-level"])
def test_kernel_read_equals_the_pytorch_read(activation, shared, monkeypatch):
    monkeypatch.setattr(cms_step, "TILES", SMALL_TILES)
    b, d, f = 3, 40, 100  # neither a multiple of the tiles
    z = torch.randn(b, 1, d, dtype=D64, generator=torch.Generator().manual_seed(1)).to(DEVICE)
    w = _weights(b, d, f, D64, shared)
    assert cms_step.why_not(z, *w, activation) is None
    torch.testing.assert_close(
        cms_step.read_level(z, *w, activation), _read(z, w, activation), rtol=1e-12, atol=1e-12
    )


def test_kernel_read_of_bf16_weights_follows_autocast():
    """bf16 read copies and a float32 input, as the decoder holds them under autocast: the output is
    float32 and within bf16 rounding of autocast's read (which rounds at the same places)."""
    b, d, f = 2, 64, 256
    z = torch.randn(b, 1, d, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    w = _weights(b, d, f, torch.bfloat16)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        expected = _read(z, w, "gelu")
    got = cms_step.read_level(z, *w, "gelu")
    assert got.dtype == torch.float32 == expected.dtype
    if DEVICE == "cuda":
        torch.testing.assert_close(got, expected, rtol=1e-2, atol=1e-2)
    else:  # Triton's interpreter truncates to bf16 where a GPU rounds: up to one more unit in 2^7
        exact = _read(z.double(), [t.double() for t in w], "gelu")
        assert (got - exact).abs().max() < 2e-2 * exact.abs().max()
    torch.testing.assert_close(cms_step.read_level(z, *(t.float() for t in w), "gelu"),
                               _read(z, [t.float() for t in w], "gelu"), rtol=1e-5, atol=1e-5)  # fmt: skip


def _cms(impl, **over):
    over = {
        "d_model": 16,
        "n_heads": 2,
        "cms.chunk_sizes": (3, 6),
        "cms.error": "local",
        "cms.lr": 0.1,
        **over,
    }
    config = ModelConfig.preset("hope", vocab_size=61, impl=impl, **over)
    torch.manual_seed(0)
    return ContinuumMemory(config).double().to(DEVICE)


@pytest.mark.parametrize(
    "over",
    [{}, {"cms.variant": "independent"}, {"cms.error": "none"}],
    ids=["sequential", "independent", "frozen"],
)
def test_cms_decoded_through_the_kernel_equals_its_forward(over, monkeypatch):
    """Token by token across both levels' boundaries (3 and 6 tokens), the kernel reads every level:
    each token's output equals the whole sequence's forward."""
    monkeypatch.setattr(cms_step, "TILES", SMALL_TILES)
    calls = []
    real = cms_step.read_level
    monkeypatch.setattr(cms_step, "read_level", lambda *a: calls.append(1) or real(*a))
    cms = _cms("triton", **over)
    x = torch.randn(2, 14, cms.spec.d_in, dtype=D64, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    with torch.no_grad():
        full, _ = cms(x)
        state = cms.static_state(None, 2, 14, D64)
        for t in range(14):
            delta = cms.decode_step(x[:, t : t + 1], state, cms.level_steps(t))
            torch.testing.assert_close(delta[:, 0], full[:, t], rtol=1e-10, atol=1e-10, msg=f"token {t}")
    assert len(calls) == 14 * len(cms.chunk_sizes)


def test_the_model_decoded_through_the_kernel_equals_the_pytorch_decoder(monkeypatch):
    """Only the CMS read changes between the two decoders (the Titans layers stay on their PyTorch
    step): the whole model's logits agree to float64 rounding."""
    monkeypatch.setattr(cms_step, "TILES", SMALL_TILES)
    over = {"d_model": 16, "n_heads": 2, "n_layers": 2, "cms.chunk_sizes": (3, 6), "titans.chunk_size": 4}
    config = ModelConfig.preset("hope", vocab_size=61, impl="chunked", **over)
    torch.manual_seed(0)
    model = build_model(config).double().eval().to(DEVICE)
    ids = torch.randint(0, 61, (2, 13), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    with torch.no_grad():
        state = model(ids[:, :5])[1]
    plain = Decoder(model, state, batch_size=2, max_len=13)
    expected = [plain.step(ids[:, t]).clone() for t in range(5, 13)]
    for block in model.blocks:
        block.ffn.impl = "triton"  # the CMS alone; the mixers keep impl "chunked"
    kernel = Decoder(model, state, batch_size=2, max_len=13)
    for t, logits in zip(range(5, 13), expected):
        torch.testing.assert_close(kernel.step(ids[:, t]), logits, rtol=1e-10, atol=1e-10, msg=f"token {t}")


def test_what_the_kernel_cannot_read_is_refused_by_name():
    z = torch.randn(2, 1, 8, dtype=D64, device=DEVICE)
    w = _weights(2, 8, 16, D64)
    assert "one token" in cms_step.why_not(torch.randn(2, 3, 8, dtype=D64, device=DEVICE), *w, "gelu")
    assert "row-major" in cms_step.why_not(
        z, w[0].transpose(-1, -2).contiguous().transpose(-1, -2), w[1], "gelu"
    )
    assert "activation" in cms_step.why_not(z, *w, "relu")
    assert "w_down" in cms_step.why_not(z, w[0], w[1].float(), "gelu")
    cms = _cms("triton")
    state = cms.static_state(None, 2, 4, D64)
    for level in state["read"]:  # a state whose weights are not row-major: impl "triton" says so
        level[0] = level[0].transpose(-1, -2).contiguous().transpose(-1, -2)
    with pytest.raises(ValueError, match="impl='triton' cannot read this CMS level.*row-major"):
        cms.decode_step(torch.randn(2, 1, cms.spec.d_in, dtype=D64, device=DEVICE), state, cms.level_steps(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compile", [False, True])
def test_graphed_bf16_decoding_through_the_kernel_equals_the_eager_pytorch_step(compile):
    """As `hope generate` runs on CUDA: bf16 autocast, the step in a CUDA graph (and compiled), the CMS
    read through the kernel; against the eager step on PyTorch's matmuls, at autocast's tolerance."""
    config = ModelConfig.preset("hope", size="tiny", vocab_size=61, impl="chunked")
    torch.manual_seed(0)
    model = build_model(config).cuda().eval()
    ids = torch.randint(0, 61, (2, 40), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        _, state = model(ids[:, :11])
        eager = Decoder(model, state, batch_size=2, max_len=40, cuda_graph=False)
        expected = [eager.step(ids[:, t]).float().clone() for t in range(11, 40)]
        for block in model.blocks:
            block.ffn.impl = "triton"
        graphed = Decoder(model, state, batch_size=2, max_len=40, cuda_graph=True, compile=compile)
    for t, want in zip(range(11, 40), expected):
        torch.testing.assert_close(
            graphed.step(ids[:, t]).float(), want, rtol=3e-2, atol=3e-2, msg=f"token {t}"
        )
