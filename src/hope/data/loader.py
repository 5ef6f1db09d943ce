"""Batches of contiguous token windows in a seeded order, with a position that makes resuming exact.

The token stream is cut into windows of ``seq_len + 1`` tokens (stride ``seq_len``: a window's last
token is the next window's first input). Each epoch visits every window once in an order drawn from
``seed + epoch``. The loader's whole state is one integer, the number of windows handed out across all
processes, so a checkpoint taken after step k resumes on exactly the windows step k+1 would have used,
even with a different number of processes as long as the global batch is the same.
"""

import numpy as np
import torch


def num_windows(n_tokens: int, seq_len: int) -> int:
    return max(0, (n_tokens - 1) // seq_len)


def check_long_enough(tokens: np.ndarray, seq_len: int, split: str) -> None:
    if num_windows(len(tokens), seq_len) < 1:
        raise ValueError(
            f"the {split} split has {len(tokens)} tokens, fewer than one sequence of seq_len + 1 = "
            f"{seq_len + 1}; "
            "use more data, a shorter --seq-len, or (for validation) a larger val_fraction"
        )


class TokenLoader:
    """Yields ``(inputs, targets)`` of shape ``(batch_size, seq_len)`` for this process.

    Every call consumes ``batch_size * world_size`` windows of the global order; process ``rank`` takes
    its contiguous slice of them, so N processes with batch b see what one process with batch N*b sees.
    """

    def __init__(
        self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1
    ):
        check_long_enough(tokens, seq_len, "training")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.n_windows = num_windows(len(tokens), seq_len)
        self.position = 0  # windows handed out so far, summed over all processes
        self._epoch, self._order = -1, None

    def _window(self, index: int) -> int:
        epoch, offset = divmod(index, self.n_windows)
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
        return int(self._order[offset])

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        first = self.position + self.rank * self.batch_size
        starts = [self._window(i) * self.seq_len for i in range(first, first + self.batch_size)]
        rows = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        self.position += self.batch_size * self.world_size
        batch = torch.from_numpy(rows)
        return batch[:, :-1], batch[:, 1:]

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "n_windows": self.n_windows,
            "seq_len": self.seq_len,
        }

    def load_state_dict(self, state: dict) -> None:
        if (state["n_windows"], state["seq_len"]) != (self.n_windows, self.seq_len):
            raise ValueError(
                f"the checkpoint's data position is for {state['n_windows']} windows of {state['seq_len']} "
                f"tokens, but the data now gives {self.n_windows} windows of {self.seq_len}: "
                "the training data changed"
            )
        self.position, self.seed = state["position"], state["seed"]


def eval_batches(
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    rank: int = 0,
    world_size: int = 1,
):
    """Non-overlapping windows of a held-out stream in order, ``batch_size`` per process per batch.

    Yields ``(inputs, targets)``; the last batch may be smaller, and a process whose slice is empty
    yields nothing for it (callers sum losses and counts across processes).
    """
    check_long_enough(tokens, seq_len, "evaluation")
    n = num_windows(len(tokens), seq_len)
    global_batch = batch_size * world_size
    n_batches = -(-n // global_batch)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        lo = b * global_batch + rank * batch_size
        hi = min(lo + batch_size, n)
        if lo >= hi:
            continue
        rows = np.stack(
            [
                np.asarray(tokens[w * seq_len : w * seq_len + seq_len + 1], dtype=np.int64)
                for w in range(lo, hi)
            ]
        )
        batch = torch.from_numpy(rows)
        yield batch[:, :-1], batch[:, 1:]
