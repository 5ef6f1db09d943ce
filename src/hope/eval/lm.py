"""Language-model evaluation on a token stream: loss, perplexity, bits per byte and throughput."""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from hope import distributed as dist
from hope.data.loader import eval_batches
from hope.eval.predict import stream_pieces


@torch.no_grad()
def evaluate_lm(
    model,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    byte_lengths: np.ndarray,
    device: torch.device,
    max_batches: int | None = None,
    precision: str = "fp32",
    piece: int | None = None,
) -> dict:
    """Mean next-token loss over non-overlapping windows of ``tokens`` (every process takes its share).

    Bits per byte divides the summed loss (in bits) by the UTF-8 bytes the predicted tokens stand for,
    which makes byte- and BPE-tokenised runs comparable. With ``piece``, each window streams through the
    model ``piece`` tokens at a time with its state carried: the same loss (a model that streams exactly)
    in memory bounded by the piece, so windows can be as long as a memory model reaches. Where the model's
    state has a fixed size the whole pieces go through `Streamer` (static buffers; a CUDA graph a piece on
    CUDA), the rest of a window through ``model(ids, state)``.
    """
    was_training = model.training
    model.eval()
    byte_lengths_t = torch.as_tensor(byte_lengths, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, tokens, bytes
    start = time.perf_counter()
    streamers: dict = {}  # stream_pieces' Streamers, one per batch size (the last batch may be smaller)
    for inputs, targets in eval_batches(
        tokens, seq_len, batch_size, max_batches, dist.rank(), dist.world_size()
    ):
        inputs, targets = inputs.to(device), targets.to(device)
        nats = []

        def add(start: int, logits: torch.Tensor) -> None:
            span = targets[:, start : start + logits.shape[1]]
            nats.append(F.cross_entropy(logits.flatten(0, 1), span.flatten(), reduction="sum"))

        # a whole window in one call stays on model(ids) (no graphs captured for a training run's eval)
        stream_pieces(
            model, inputs, piece or inputs.shape[1], device, precision, add, streamers if piece else None
        )
        nats = torch.stack(nats).sum()
        sums += torch.stack(
            [
                nats.double(),
                torch.tensor(targets.numel(), device=device, dtype=torch.float64),
                byte_lengths_t[targets].sum().double(),
            ]
        )
    dist.all_reduce_sum(sums)
    elapsed = time.perf_counter() - start
    model.train(was_training)
    nats, n_tokens, n_bytes = sums.tolist()
    loss = nats / n_tokens
    return {
        "loss": loss,
        "ppl": math.exp(min(loss, 700.0)),
        "bpb": nats / math.log(2) / n_bytes,
        "tokens": int(n_tokens),
        "tok_per_s": n_tokens / elapsed,
    }
