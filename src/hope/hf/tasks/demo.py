"""Documents of the `hope_demo` lm-eval tasks, generated here (seeded), so they run offline.

- `hope_demo_choice` (multiple choice): three letters repeated, cut short; which letter comes next?
  In-context copying, the skill a memory that learns in context is for.
- `hope_demo_gen` (generate_until): the same patterns; generate the next four letters, greedy.
- `hope_demo_rolling` (loglikelihood_rolling): paragraphs of the built-in Shakespeare corpus, for
  word / byte perplexity and bits per byte.
"""

import random
import string

import datasets

N_DOCS = 20


def _patterns(seed: int):
    rng = random.Random(seed)
    for _ in range(N_DOCS):
        letters = rng.sample(string.ascii_lowercase, 3)
        cut = rng.randrange(3)
        yield letters, "".join(letters) * 3 + "".join(letters[:cut]), cut


def _dataset(docs: list[dict]) -> dict:
    return {"test": datasets.Dataset.from_list(docs)}


def choice_docs(**kwargs) -> dict:
    return _dataset(
        [{"context": context, "choices": letters, "answer": cut} for letters, context, cut in _patterns(0)]
    )


def gen_docs(**kwargs) -> dict:
    docs = []
    for letters, context, cut in _patterns(1):
        cycle = "".join(letters) * 3
        docs.append({"context": context, "target": cycle[cut : cut + 4]})
    return _dataset(docs)


def rolling_docs(**kwargs) -> dict:
    from hope.data import builtin_text

    paragraphs = [p for p in builtin_text()[200_000:260_000].split("\n\n") if len(p) > 200]
    return _dataset([{"text": p} for p in paragraphs[:4]])
