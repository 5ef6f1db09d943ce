"""The lm-eval adapter: its scores equal a direct computation; the offline demo tasks run end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from hope.hf import HopeConfig, HopeForCausalLM, byte_tokenizer
from hope.hf.harness import TASKS_DIR, HopeLM


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf-model")
    torch.manual_seed(0)
    HopeForCausalLM(HopeConfig.from_preset("hope", d_model=32, n_layers=1)).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm(pretrained):
    return HopeLM(pretrained=str(pretrained), piece=5)  # small pieces: every input streams in several calls


def requests(kind, args):
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def direct_logprobs(lm, ids):
    """log p(ids[t] | ids[:t]) for t >= 1, from one forward pass over the whole sequence."""
    with torch.no_grad():
        logits = lm.model.model(torch.tensor([ids]))[0][0].float()
    logprobs = F.log_softmax(logits[:-1], dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    return logprobs, logits[:-1].argmax(-1) == torch.tensor(ids[1:])


def test_loglikelihood_equals_a_direct_computation(lm):
    pairs = [("ROMEO:", " But soft"), ("JULIET", ": Ay me"), ("ROMEO:", " What light"), ("", "abc")]
    results = lm.loglikelihood(requests("loglikelihood", pairs))
    for (context, continuation), (logprob, greedy) in zip(pairs, results):
        ctx = list(context.encode()) or [ord("\n")]  # an empty context is the prefix token
        cont = list(continuation.encode())
        logprobs, hits = direct_logprobs(lm, ctx + cont)
        assert logprob == pytest.approx(float(logprobs[-len(cont) :].sum()), abs=1e-4)
        assert greedy == bool(hits[-len(cont) :].all())


def test_loglikelihood_rolling_equals_a_direct_computation(lm):
    texts = ["To be, or not to be, that is the question.", "x"]
    results = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(t,) for t in texts]))
    for text, logprob in zip(texts, results):
        logprobs, _ = direct_logprobs(lm, [ord("\n"), *text.encode()])
        assert logprob == pytest.approx(float(logprobs.sum()), abs=1e-4)


def test_generate_until_is_greedy_generate_cut_at_the_first_stop(lm):
    prompt = "ROMEO:"
    ids = lm.tokenizer(prompt, return_tensors="pt")
    full = lm.tokenizer.decode(lm.model.generate(**ids, max_new_tokens=16, do_sample=False)[0, len(prompt) :])
    stop = full[5:7]
    args = [(prompt, {"max_gen_toks": 16}), (prompt, {"until": [stop, "never"], "max_gen_toks": 16})]
    assert lm.generate_until(requests("generate_until", args)) == [full, full[: full.index(stop)]]
    with pytest.raises(ValueError, match=r"generation_kwargs \['num_beams'\] are not supported"):
        lm.generate_until(requests("generate_until", [(prompt, {"num_beams": 2})]))


def test_bad_model_args_are_clear_errors(pretrained):
    with pytest.raises(ValueError, match="piece must be an integer >= 1"):
        HopeLM(pretrained=str(pretrained), piece=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pass --device cpu"):
            HopeLM(pretrained=str(pretrained), device="cuda")


def test_demo_tasks_run_through_lm_eval(tmp_path):
    """Model `hope` and the `hope_demo` tasks through `simple_evaluate` (a Transformer++: the plumbing
    is the same for every preset, and it is the fastest on a CPU)."""
    torch.manual_seed(0)
    HopeForCausalLM(HopeConfig.from_preset("transformer", d_model=32, n_layers=1)).save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    out = simple_evaluate(
        model="hope",
        model_args=f"pretrained={tmp_path},piece=64",
        tasks=["hope_demo"],
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        device="cpu",
        limit=2,
    )
    results = out["results"]
    assert set(results) >= {"hope_demo_choice", "hope_demo_gen", "hope_demo_rolling"}
    assert 0 <= results["hope_demo_choice"]["acc,none"] <= 1
    assert results["hope_demo_gen"]["exact_match,none"] in (0, 0.5, 1)
    rolling = results["hope_demo_rolling"]
    assert rolling["bits_per_byte,none"] == pytest.approx(math.log2(rolling["byte_perplexity,none"]))
    assert 6 < rolling["bits_per_byte,none"] < 10  # an untrained byte model: about log2(256) = 8
