"""Hugging Face integration (needs the `hf` extra: `pip install -e '.[hf]'`).

Importing this package registers `HopeConfig` / `HopeForCausalLM` with `AutoConfig` and
`AutoModelForCausalLM` (model type `hope`), so after `import hope.hf` a folder written by
`hope export` or `save_pretrained` loads with `AutoModelForCausalLM.from_pretrained(DIR)`.
The lm-evaluation-harness adapter lives in `hope.hf.harness` (registered as model `hope`).
"""

try:
    import transformers
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("hope.hf needs the hf extra: pip install -e '.[hf]' (transformers>=5.17)") from e

from hope.hf.modeling import HopeCausalLMOutput, HopeConfig, HopeForCausalLM
from hope.hf.tokenization import byte_tokenizer, hf_tokenizer

transformers.AutoConfig.register(HopeConfig.model_type, HopeConfig, exist_ok=True)
transformers.AutoModelForCausalLM.register(HopeConfig, HopeForCausalLM, exist_ok=True)

__all__ = ["HopeCausalLMOutput", "HopeConfig", "HopeForCausalLM", "byte_tokenizer", "hf_tokenizer"]
