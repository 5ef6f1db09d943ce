"""A tiny model and batches shared by the optimizer tests."""

import torch
from torch import nn

VOCAB = 7


class TinyNet(nn.Module):
    """Embedding → Conv1d (a 3-D weight) → LayerNorm → Linear(+bias) → Linear: every routing case."""

    def __init__(self, seed: int = 0, dtype: torch.dtype = torch.float64):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(VOCAB, 4)
        self.conv = nn.Conv1d(4, 6, kernel_size=2)
        self.norm = nn.LayerNorm(6)
        self.hidden = nn.Linear(6, 6)
        self.head = nn.Linear(6, 5, bias=False)
        self.to(dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.conv(self.emb(ids).transpose(1, 2)).transpose(1, 2)
        return self.head(torch.tanh(self.hidden(torch.tanh(self.norm(h)))))


def batches(
    n: int, seed: int = 1, batch: int = 3, length: int = 6
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randint(0, VOCAB, (batch, length), generator=g),
            torch.randint(0, 5, (batch, length - 1), generator=g),
        )
        for _ in range(n)
    ]


def loss_fn(model: nn.Module, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(ids)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, data) -> list[float]:
    losses = []
    for ids, targets in data:
        opt.zero_grad()
        loss = loss_fn(model, ids, targets)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
