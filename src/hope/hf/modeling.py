"""`HopeConfig` / `HopeForCausalLM`: every hope preset as a Hugging Face `transformers` causal LM.

`HopeForCausalLM` wraps our `LanguageModel` unchanged (its weights live under `model.`), so a
checkpoint exported from a run computes exactly what the run computes. The config stores the fully
resolved `ModelConfig` (`model`) next to the preset it came from (`preset`); loading validates both.

`generate()` carries the model's own streaming state as its cache, under the model-specific name
`state` (as RWKV does): the prompt goes through the model once, then each new token is fed alone
with the state the previous call returned, exactly as `hope generate` streams. Beam search would need
the state reordered between beams and is refused; padding is refused too (a memory that learns in
context would learn the pad tokens), so batch only prompts of equal length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from hope.config import PRESETS, ModelConfig
from hope.models.lm import LanguageModel


class HopeConfig(PreTrainedConfig):
    """`preset`: the architecture's name (`hope.config.PRESETS`); `model`: the resolved
    `ModelConfig.to_dict()` (None: the preset at size `tiny`). Build one with `from_preset` or
    `from_model_config`; the usual `transformers` names (`vocab_size`, `hidden_size`, …) read it."""

    model_type = "hope"

    preset: str = "hope"
    model: dict | None = None
    use_cache: bool = True

    def __post_init__(self, **kwargs):
        if self.preset not in PRESETS:
            raise ValueError(f"hope config: unknown preset {self.preset!r}; known presets: {sorted(PRESETS)}")
        if self.model is None:
            self.model = ModelConfig.preset(self.preset).to_dict()
        resolved = self.model_config()  # validates every field
        if resolved.name != self.preset:
            raise ValueError(
                f"hope config: preset {self.preset!r} does not match the model's own name {resolved.name!r}"
            )
        self.model = json.loads(json.dumps(resolved.to_dict()))  # as config.json holds it (tuples: lists)
        super().__post_init__(**kwargs)

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs) -> HopeConfig:
        return cls(preset=config.name, model=config.to_dict(), **kwargs)

    @classmethod
    def from_preset(cls, name: str, size: str = "tiny", **overrides) -> HopeConfig:
        """`ModelConfig.preset(name, size, **overrides)` as a `HopeConfig`."""
        return cls.from_model_config(ModelConfig.preset(name, size, **overrides))

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    @property
    def vocab_size(self) -> int:
        return self.model["vocab_size"]

    @property
    def hidden_size(self) -> int:
        return self.model["d_model"]

    @property
    def num_hidden_layers(self) -> int:
        return self.model["n_layers"]

    @property
    def num_attention_heads(self) -> int:
        return self.model["n_heads"]

    @property
    def tie_word_embeddings(self) -> bool:
        return self.model["tie_embeddings"]


@dataclass
class HopeCausalLMOutput(ModelOutput):
    """`state`: the `LanguageModel` state after this call (memories, CMS fast weights, KV caches)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: dict | None = None


class HopeForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = HopeConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules: ClassVar[list[str]] = ["Block"]
    _tied_weights_keys: ClassVar[dict[str, str]] = {
        "model.head.weight": "model.embed.weight"
    }  # used only when tie_word_embeddings
    _is_stateful = True  # no assisted generation: a streamed state cannot be rewound

    def __init__(self, config: HopeConfig):
        super().__init__(config)
        self.model = LanguageModel(config.model_config())
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the cache is our own state, made by the first forward

    def _init_weights(self, module) -> None:
        """The `LanguageModel` initialises itself (each layer as its docstring says); nothing to add."""

    def get_input_embeddings(self):
        return self.model.embed

    def get_output_embeddings(self):
        return self.model.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        state: dict | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        return_dict: bool | None = None,
    ):
        """`state` continues a stream (from a previous output's `state`); `labels` (-100: ignored)
        give the mean next-token loss, shifted inside as in every `transformers` causal LM."""
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError(
                "HopeForCausalLM does not support padding (attention_mask has zeros): the in-context "
                "memories would learn the pad tokens; batch sequences of equal length instead"
            )
        logits, new_state = self.model(input_ids, state=state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(),
                labels[:, 1:].flatten().to(logits.device),
                ignore_index=-100,
            )
        use_cache = self.config.use_cache if use_cache is None else use_cache
        out = HopeCausalLMOutput(loss=loss, logits=logits, state=new_state if use_cache else None)
        return out if return_dict is not False else out.to_tuple()

    # ---- generation --------------------------------------------------------------------------
    def prepare_inputs_for_generation(
        self, input_ids, state=None, attention_mask=None, use_cache=None, **kwargs
    ) -> dict:
        """With a state, only the tokens it has not seen yet (the last generated one) are fed."""
        if state is not None:
            input_ids = input_ids[:, state["pos"] :]
        return {
            "input_ids": input_ids,
            "state": state,
            "attention_mask": attention_mask,
            "use_cache": use_cache,
        }

    def _update_model_kwargs_for_generation(
        self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1
    ):
        model_kwargs["state"] = outputs.state
        return super()._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
        )

    def generate(self, *args, **kwargs):
        config = kwargs.get("generation_config") or self.generation_config
        if (kwargs.get("num_beams") or config.num_beams or 1) > 1:
            raise ValueError(
                "HopeForCausalLM.generate supports greedy search and sampling, not beam search "
                "(num_beams > 1): the streamed memory state is not reordered between beams"
            )
        return super().generate(*args, **kwargs)
