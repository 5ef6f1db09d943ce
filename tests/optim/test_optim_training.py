"""Every optimizer decreases a least-squares loss and trains a tiny next-token model."""

import math

import pytest
import torch
from torch import nn

from hope.optim import build_optimizer

# Learning rates picked once by hand for these problems (each optimizer has its own scale). "m3" is
# Algorithm 1 as written: its step is η·O_ij/|g_ij|, which diverges on this least-squares problem from
# η ≈ 1e-3 and only creeps at η = 3e-5 — so it is held to "decreases", the others to "halves".
LSQ = {
    "adamw": 0.05,
    "muon": 0.05,
    "m3": 3e-5,
    "m3_orthogonalized": 0.01,
    "dgd": 0.5,
    "delta_momentum": 0.05,
    "deep_momentum": 0.02,
}
LM = {
    "adamw": 1e-2,
    "muon": 1e-2,
    "m3": 1e-3,
    "m3_orthogonalized": 1e-2,
    "dgd": 0.5,
    "delta_momentum": 0.1,
    "deep_momentum": 0.1,
}


def make(name, model, lr):
    if name == "m3_orthogonalized":
        return build_optimizer("m3", model, lr=lr, variance="orthogonalized")
    return build_optimizer(name, model, lr=lr)


@pytest.mark.parametrize("name", sorted(LSQ))
def test_least_squares_loss_decreases(name):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(256, 16, generator=g)
    X = X / X.norm(dim=1, keepdim=True)  # unit rows: DGD's normalised-input regime
    Y = X @ torch.randn(16, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(16, 8, bias=False)
    opt = make(name, model, LSQ[name])
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = 0.5 * (model(X) - Y).pow(2).sum(dim=1).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # DGD's input-dependent decay pulls W towards 0, so its fixed point is a regularised solution.
    assert losses[-1] < (0.99 if name == "m3" else 0.5) * losses[0], losses[::10]


class BigramMLP(nn.Module):
    """Predicts the next token from the current and previous tokens."""

    def __init__(self, vocab: int, dim: int = 32):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(2 * dim, 64)
        self.norm = nn.LayerNorm(64)
        self.out = nn.Linear(64, vocab)

    def forward(self, ids):
        e = self.emb(ids)
        prev = torch.cat([torch.zeros_like(e[:, :1]), e[:, :-1]], dim=1)
        return self.out(torch.relu(self.norm(self.mix(torch.cat([e, prev], dim=-1)))))


@pytest.mark.parametrize("name", sorted(LM))
def test_tiny_language_model_learns_a_deterministic_sequence(name):
    vocab, period = 32, 64
    text = torch.tensor(
        [(3 * i * i + 1) % vocab for i in range(period)]
    )  # next token depends on two previous
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = BigramMLP(vocab)
    opt = make(name, model, LM[name])
    for _ in range(120):
        start = torch.randint(0, period, (16, 1), generator=g)
        window = text[(start + torch.arange(17)) % period]
        logits = model(window[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), window[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * math.log(vocab), loss.item()
