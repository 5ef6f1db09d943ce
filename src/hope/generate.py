"""Streaming text generation: the prompt goes through the model once, then one token per step on the
model's static decoding buffers (`hope.models.decode`, one CUDA graph replay per token on CUDA), so
the prompt is never re-read and memory stays flat however long it runs."""

import codecs
from collections.abc import Iterator

import torch

from hope.data.tokenizer import Tokenizer
from hope.models.decode import Decoder


def sample_next(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One id per row of ``logits`` (B, V): greedy at temperature 0, else sampling after top-k/top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p; the top token always stays.
        drop = probs.cumsum(dim=-1) - probs >= top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def stream(
    model,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """Yields the generated text piece by piece, whole UTF-8 characters only: a byte-level model's
    partial character is held back until it completes, and bytes that can never form one (a stray
    continuation byte, a sequence cut short by another lead byte) are dropped, never shown as �."""
    ids = tokenizer.encode(prompt)
    if len(ids) == 0:
        raise ValueError("the prompt must not be empty")
    was_training = model.training
    model.eval()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
    logits, state = model(torch.as_tensor(ids.astype("int64"), device=device)[None], state=None)
    # one-token steps on static buffers (a CUDA graph on CUDA) where the model has them: not with the
    # CMS's `lm` error, nor for a model that only offers model(ids, state)
    static = None
    if hasattr(model, "decode_step") and not getattr(model, "learns_from_lm_loss", False):
        static = Decoder(model, state, batch_size=1, max_len=len(ids) + max_new_tokens)
    for i in range(max_new_tokens):
        next_id = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
        piece = decoder.decode(tokenizer.token_bytes(int(next_id)))
        if piece:
            yield piece
        if i + 1 < max_new_tokens and static is not None:
            logits = static.step(next_id)
        elif i + 1 < max_new_tokens:
            logits, state = model(next_id.view(1, 1), state=state)
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
    model.train(was_training)
