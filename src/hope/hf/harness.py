"""The lm-evaluation-harness (0.4.x) adapter: model `hope`, a folder from `hope export` or `save_pretrained`.

    hope-lm-eval --model hope --model_args pretrained=DIR --tasks hope_demo --include_path src/hope/hf/tasks

`hope-lm-eval` (also `python -m hope.hf.harness`) is the `lm_eval` command with this module imported,
which registers the model; from Python, `import hope.hf.harness` before `lm_eval.simple_evaluate`.

Every input streams through the model's state in pieces of `piece` tokens (model arg, default
1024), so no input is truncated to a window: `loglikelihood` scores a continuation given its whole
context, `loglikelihood_rolling` a whole document given nothing but the prefix token, and
`generate_until` reads its whole prompt. Requests sharing a context (the choices of a
multiple-choice question) read it once and each continues from the same state. Requests run one at
a time (the state is per sequence), so `batch_size` is accepted but changes nothing. Our tokenisers
have no end-of-text token: the prefix token that stands for an empty context is the newline, the
separator of the documents the models are trained on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from transformers import AutoTokenizer

from hope.generate import sample_next
from hope.hf.modeling import HopeForCausalLM

TASKS_DIR = Path(__file__).parent / "tasks"  # the offline `hope_demo` tasks, for --include_path
GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")


@register_model("hope")
class HopeLM(TemplateLM):
    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        piece: int = 1024,
        batch_size: int | str | None = 1,
        max_batch_size: int | None = None,
    ):
        super().__init__()
        if not isinstance(piece, int) or isinstance(piece, bool) or piece < 1:
            raise ValueError(f"hope model_args: piece must be an integer >= 1, got {piece!r}")
        self.piece = piece
        self._device = torch.device(device)
        if self._device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"hope: device {device!r} (lm_eval's default) needs CUDA, which is not available; pass --device cpu"
            )
        self.model = HopeForCausalLM.from_pretrained(pretrained).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(pretrained)

    @property
    def eot_token_id(self) -> int:
        if self.tokenizer.eos_token_id is not None:
            return self.tokenizer.eos_token_id
        return self.tok_encode("\n")[-1]

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=False)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    @torch.no_grad()
    def _feed(self, tokens: list[int], state: dict | None, on_logits=None) -> tuple[torch.Tensor, dict]:
        """Streams `tokens` in pieces; `on_logits(start, logits)` sees each piece's (T, V) float logits.
        Returns the last position's logits (V,) and the state after the last token."""
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[None]
        for start in range(0, ids.shape[1], self.piece):
            logits, state = self.model.model(ids[:, start : start + self.piece], state=state)
            logits = logits[0].float()
            if on_logits is not None:
                on_logits(start, logits)
        return logits[-1], state

    def _continuation(self, last: torch.Tensor, state: dict, continuation: list[int]) -> tuple[float, bool]:
        """log p(continuation | the context that left `last` (its next-token logits) and `state`)."""
        rows = [last[None]]
        if len(continuation) > 1:
            self._feed(continuation[:-1], state, lambda _, logits: rows.append(logits))
        logits = torch.cat(rows)
        target = torch.tensor(continuation, device=logits.device)
        logprob = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
        return float(logprob), bool((logits.argmax(-1) == target).all())

    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, **kwargs
    ) -> list[tuple[float, bool]]:
        order = sorted(range(len(requests)), key=lambda i: requests[i][1])  # equal contexts side by side
        results: list = [None] * len(requests)
        context, last, state = None, None, None
        for i in order:
            _, context_enc, continuation_enc = requests[i]
            if not continuation_enc:
                raise ValueError(f"hope: request {requests[i][0]!r} has an empty continuation")
            if context_enc != context:
                context = context_enc
                last, state = self._feed(context_enc, None)
            results[i] = self._continuation(last, state, continuation_enc)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return [self._rolling(self.tok_encode(request.args[0])) for request in requests]

    def _rolling(self, tokens: list[int]) -> float:
        """log p(tokens): each token given all before it, the first given the prefix token."""
        if not tokens:
            return 0.0
        parts = []

        def add(start, logits):
            target = torch.tensor(tokens[start : start + logits.shape[0]], device=logits.device)
            parts.append(F.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum().double().cpu())

        self._feed([self.prefix_token_id, *tokens[:-1]], None, add)
        return float(sum(parts))

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self._generate(*request.args) for request in requests]

    @torch.no_grad()
    def _generate(self, context: str, gen_kwargs: dict) -> str:
        unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
        if unknown:
            raise ValueError(
                f"hope: generation_kwargs {unknown} are not supported; accepted: {list(GEN_KWARGS)}"
            )
        until = gen_kwargs.get("until") or []
        until = [s for s in ([until] if isinstance(until, str) else until) if s]
        temperature = float(gen_kwargs.get("temperature", 0.0)) if gen_kwargs.get("do_sample") else 0.0
        tokens = self.tok_encode(context) or [self.prefix_token_id]
        logits, state = self._feed(tokens, None)
        generated: list[int] = []
        text = ""
        for _ in range(int(gen_kwargs.get("max_gen_toks", 256))):
            next_id = sample_next(logits[None], temperature, gen_kwargs.get("top_k"), gen_kwargs.get("top_p"))
            generated.append(int(next_id))
            text = self.tok_decode(generated)
            stops = [text.index(s) for s in until if s in text]
            if stops:
                return text[: min(stops)]
            logits, state = self._feed(generated[-1:], state)
        return text


def main() -> None:
    """The `lm_eval` command line, with model `hope` registered."""
    from lm_eval.__main__ import cli_evaluate

    sys.exit(cli_evaluate())


if __name__ == "__main__":
    main()
