"""A training step replayed from CUDA graphs (hope.train.graphs) equals the eager step: loss and every
parameter's gradient, for the memory presets on their fast paths; the layers' own captures stand aside
while a step is captured."""

import pytest
import torch

import hope
from hope.ops.captures import Captures, suspended
from hope.train.graphs import GraphedLoss
from hope.train.step import next_token_loss, train_step

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def test_suspended_captures_neither_record_nor_replay():
    captures = Captures("test", "switch")
    layer = torch.nn.Linear(2, 2)
    key = ("shape", (1, 2))
    assert captures.wants(layer, key)
    captures.add(layer, key, "graph")
    with suspended():
        assert captures.get(layer, key) is None
        assert captures.of(layer) == {}
        assert not captures.wants(layer, ("other",))
    assert captures.get(layer, key) == "graph"
    assert captures.of(layer) == {key: "graph"}


def test_graphs_refuse_a_model_off_the_gpu():
    model = hope.build_model(hope.ModelConfig.preset("transformer", size="tiny", vocab_size=32))
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedLoss(model, "fp32")


def test_train_step_takes_a_loss_function():
    """train_step's loss_fn is what it differentiates: here the eager loss, so the step is unchanged."""
    torch.manual_seed(0)
    cfg = hope.ModelConfig.preset("transformer", size="tiny", vocab_size=32)
    ids = torch.randint(0, 32, (2, 9))
    losses = []
    for with_fn in (False, True):
        torch.manual_seed(1)
        model = hope.build_model(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        fn = (lambda i, t: next_token_loss(model, i, t, "fp32")) if with_fn else None  # noqa: E731
        for _ in range(2):
            losses.append(
                train_step(
                    model,
                    opt,
                    lambda: (ids[:, :-1], ids[:, 1:]),
                    [1e-2],
                    1.0,
                    torch.device("cpu"),
                    loss_fn=fn,
                )
            )
    assert losses[:2] == losses[2:]


def _tiny(preset: str) -> hope.ModelConfig:
    over = {"titans.chunk_size": 8, "cms.chunk_sizes": (8, 16)} if preset != "transformer" else {}
    return hope.ModelConfig.preset(preset, size="tiny", vocab_size=64, impl="auto", **over)


def _backward(fn, model, ids, precision) -> torch.Tensor:
    """One micro-batch's loss, differentiated; only its value is returned, so that no autograd graph
    outlives the call (a kept graph's AccumulateGrad nodes on the default stream would break a
    later capture)."""
    loss = (
        next_token_loss(model, ids[:, :-1], ids[:, 1:], precision)
        if fn is None
        else fn(ids[:, :-1], ids[:, 1:])
    )
    loss.backward()
    return loss.detach().clone()


@GPU
@pytest.mark.parametrize(
    ("preset", "precision"), [("hope", "fp32"), ("hope", "bf16"), ("titans", "fp32"), ("transformer", "bf16")]
)
def test_graphed_step_equals_eager(preset, precision):
    """Two graphed micro-batches accumulate what two eager ones do (the second replay must not
    overwrite the first's gradients), and a step on other data replays the same graphs."""
    torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = hope.build_model(_tiny(preset)).to(device)
    batches = [torch.randint(0, 64, (2, 33), device=device) for _ in range(3)]
    graphed = GraphedLoss(model, precision)
    runs = {}
    for label, fn in (("eager", None), ("graphs", graphed)):
        grads, losses = [], []
        for pair in ((0, 1), (2, 2)):
            model.zero_grad(set_to_none=True)
            losses += [_backward(fn, model, batches[b], precision) for b in pair]
            grads.append({n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()})
        runs[label] = losses, grads
    tol = {"fp32": 1e-4, "bf16": 2e-2}[precision]
    (want_losses, want_grads), (got_losses, got_grads) = runs["eager"], runs["graphs"]
    for a, b in zip(got_losses, want_losses):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    for got, want in zip(got_grads, want_grads):
        assert got.keys() == want.keys()
        for name in want:
            assert (got[name] is None) == (want[name] is None), name
            if want[name] is not None:
                scale = want[name].abs().max().clamp_min(1e-6)
                torch.testing.assert_close(
                    got[name] / scale, want[name] / scale, rtol=tol, atol=tol, msg=name
                )
    assert len(graphed.graphed) == 1
