"""Model configuration: validated dataclasses, architecture presets and size presets.

`ModelConfig.preset(name, size="tiny", **overrides)` is the front door. Overrides are top-level
fields (`d_model=64`) or dotted keys for nested ones (`**{"titans.chunk_size": 16}`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

from hope.checks import check_choice, check_int, check_number

IMPLS = ("reference", "chunked", "triton", "auto")
BLOCKS = ("hope", "hope_attention", "transformer", "titans")
MEMORY_KINDS = ("mlp", "matrix")
OBJECTIVES = ("l2", "dot")
UPDATE_RULES = ("gd", "momentum", "dgd")
ACTIVATIONS = ("gelu", "silu")
RETRIEVALS = ("causal", "inclusive", "chunk_start")
INITS = ("learned", "zero")
DECAY_TARGETS = ("init", "zero")
SURPRISE_MODES = ("none", "absolute", "relative")
CMS_ERRORS = ("lm", "local", "none")
CMS_VARIANTS = ("sequential", "nested", "independent")
CMS_LEVELS = ("residual", "swiglu")


@dataclass
class SurpriseConfig:
    """Surprise gating of memory updates: update token t only where its surprise passes.

    `absolute`: ‖∇ℓ_t‖ > threshold. `relative`: z-score of ‖∇ℓ_t‖ over the previous `window` tokens
    of the same sequence and head > threshold (the "Dissecting HOPE" study shows an absolute gate
    passes every token at realistic loss scales).
    """

    mode: str = "none"
    threshold: float = 0.0
    window: int = 64

    def validate(self, owner: str = "titans.surprise") -> None:
        check_choice(f"{owner}.mode", self.mode, SURPRISE_MODES)
        if not isinstance(self.threshold, (int, float)) or not math.isfinite(self.threshold):
            raise ValueError(f"{owner}.threshold must be a finite number, got {self.threshold!r}")
        check_int(f"{owner}.window", self.window, 2)


@dataclass
class TitansConfig:
    """Self-referential Titans (Eq. 83–90) and, with `self_modifying=False`, the Titans LMM baseline.

    `error_clip` bounds each memory layer's per-token output error ‖g_i‖ (0 turns it off): with
    self-generated targets the first layer's error grows with the second layer's weights, and
    without a bound a trained model can diverge inside one sequence. `checkpoint_chunks` recomputes
    each chunk in the backward pass instead of storing its activations (memory ∝ chunk states only).
    `boundary_every` (impl="triton"): keep the memories at every k-th chunk boundary for the backward
    and let the kernel replay the chunks between (memory ∝ T / (C·k), one extra forward launch);
    `cuda_graphs` replays that backward's per-chunk recompute as one captured CUDA graph per layer.

    Retention: α_t starts at 1 − 1/τ_h with the horizons τ_h of the heads spaced log-uniformly over
    `decay_horizon` (tokens), so a layer holds both short- and long-lived memories from the first
    step. `decay_to="init"` makes decay and the delta rule's erasure act on M − M_0, so a memory
    forgets back to its meta-learned initial state; `"zero"` is Eq. 88 read literally (M → 0).

    The DeltaNet family as configurations (static projections, matrix memory): `decay=False` fixes
    α_t = 1, `learn_eta=False` fixes η_t = eta_max, `init="zero"` starts every sequence from M_0 = 0
    (not learned), and `retrieval="inclusive"` reads M_t(q_t), after the token's own write, as linear
    attention and DeltaNet do (`causal` reads M_{t-1}(q_t), Eq. 83).
    """

    chunk_size: int = 16
    memory: str = "mlp"
    memory_depth: int = 2
    hidden_mult: float = 2.0
    activation: str = "gelu"
    objective: str = "l2"
    update_rule: str = "dgd"
    self_modifying: bool = True
    self_generated_values: bool = True
    conv_size: int = 4
    eta_max: float = 1.0
    eta_init: float = 0.05
    decay_horizon: tuple[float, float] = (256.0, 65536.0)
    decay_to: str = "init"
    momentum_init: float = 0.9
    retrieval: str = "causal"
    decay: bool = True
    learn_eta: bool = True
    init: str = "learned"
    error_clip: float = 1.0
    checkpoint_chunks: bool = False
    boundary_every: int = 1
    cuda_graphs: bool = True
    surprise: SurpriseConfig = field(default_factory=SurpriseConfig)

    def validate(self, owner: str = "titans") -> None:
        check_int(f"{owner}.chunk_size", self.chunk_size, 1)
        check_choice(f"{owner}.memory", self.memory, MEMORY_KINDS)
        check_int(f"{owner}.memory_depth", self.memory_depth, 1)
        if self.memory == "mlp" and self.memory_depth < 2:
            raise ValueError(f"{owner}.memory_depth must be >= 2 for memory='mlp', got {self.memory_depth}")
        check_number(f"{owner}.hidden_mult", self.hidden_mult, lo_open=True)
        check_choice(f"{owner}.activation", self.activation, ACTIVATIONS)
        check_choice(f"{owner}.objective", self.objective, OBJECTIVES)
        check_choice(f"{owner}.update_rule", self.update_rule, UPDATE_RULES)
        check_int(f"{owner}.conv_size", self.conv_size, 0)
        check_number(f"{owner}.eta_max", self.eta_max, lo_open=True)
        for name in ("eta_init", "momentum_init"):
            check_number(f"{owner}.{name}", getattr(self, name), 0.0, 1.0, lo_open=True, hi_open=True)
        if self.eta_init >= self.eta_max:
            raise ValueError(f"{owner}.eta_init must be < eta_max={self.eta_max}, got {self.eta_init}")
        horizon = self.decay_horizon
        if not (
            isinstance(horizon, tuple)
            and len(horizon) == 2
            and all(isinstance(h, (int, float)) and not isinstance(h, bool) and 1 < h < 1e9 for h in horizon)
            and horizon[0] <= horizon[1]
        ):
            raise ValueError(
                f"{owner}.decay_horizon must be (shortest, longest) in tokens with 1 < shortest <= longest"
                f" < 1e9, got {horizon!r}"
            )
        check_choice(f"{owner}.decay_to", self.decay_to, DECAY_TARGETS)
        check_choice(f"{owner}.retrieval", self.retrieval, RETRIEVALS)
        check_choice(f"{owner}.init", self.init, INITS)
        for name in ("decay", "learn_eta", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{owner}.{name} must be true or false, got {getattr(self, name)!r}")  # noqa: TRY004
        for name in ("decay", "learn_eta"):
            if not getattr(self, name) and self.self_modifying:
                raise ValueError(
                    f"{owner}.{name}=False needs {owner}.self_modifying=False (static projections)"
                )
        check_number(f"{owner}.error_clip", self.error_clip)
        check_int(f"{owner}.boundary_every", self.boundary_every, 1)
        self.surprise.validate(f"{owner}.surprise")


@dataclass
class CMSConfig:
    """Continuum Memory System (Eq. 70–73): K residual-MLP levels, level ℓ stepping every C_ℓ tokens.

    `level`: `residual` M(x) = x + W_2 σ(W_1 x) (σ = `activation`), or `swiglu`
    M(x) = x + W_d(silu(W_g x) ⊙ W_u x), the Transformer++ MLP as a level (what `hope convert` starts
    from, §7.3; `activation` is then unused). Hidden width round(expansion · d_model) for both.
    """

    chunk_sizes: tuple[int, ...] = (512, 2048, 8192)
    expansion: float = 4.0
    activation: str = "gelu"
    level: str = "residual"
    error: str = "local"
    variant: str = "sequential"
    lr: float = 1e-2
    second_order: bool = False

    def validate(self, owner: str = "cms") -> None:
        if not isinstance(self.chunk_sizes, tuple) or len(self.chunk_sizes) == 0:
            raise ValueError(
                f"{owner}.chunk_sizes must be a non-empty tuple of positive ints, got {self.chunk_sizes!r}"
            )
        for c in self.chunk_sizes:
            if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                raise ValueError(f"{owner}.chunk_sizes must hold positive ints, got {self.chunk_sizes!r}")
        smallest = min(self.chunk_sizes)
        if any(c % smallest for c in self.chunk_sizes):
            raise ValueError(
                f"{owner}.chunk_sizes must all be multiples of the smallest ({smallest}), "
                f"got {self.chunk_sizes!r}"
            )
        check_number(f"{owner}.expansion", self.expansion, lo_open=True)
        check_choice(f"{owner}.activation", self.activation, ACTIVATIONS)
        check_choice(f"{owner}.level", self.level, CMS_LEVELS)
        check_choice(f"{owner}.error", self.error, CMS_ERRORS)
        check_choice(f"{owner}.variant", self.variant, CMS_VARIANTS)
        check_number(f"{owner}.lr", self.lr)


@dataclass
class ModelConfig:
    """A language model: embedding → n_layers blocks of kind `block` → RMSNorm → LM head."""

    name: str = "custom"  # the preset it came from
    block: str = "hope"
    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    mlp_mult: float = 8 / 3
    tie_embeddings: bool = True
    impl: str = "auto"
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    init_std: float = 0.02
    titans: TitansConfig = field(default_factory=TitansConfig)
    cms: CMSConfig = field(default_factory=CMSConfig)

    def __post_init__(self) -> None:
        if isinstance(self.cms.chunk_sizes, list):
            self.cms.chunk_sizes = tuple(self.cms.chunk_sizes)
        if isinstance(self.titans.decay_horizon, list):
            self.titans.decay_horizon = tuple(self.titans.decay_horizon)
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> None:
        check_choice("model.block", self.block, BLOCKS)
        check_choice("model.impl", self.impl, IMPLS)
        check_int("model.vocab_size", self.vocab_size, 2)
        check_int("model.d_model", self.d_model, 2)
        check_int("model.n_layers", self.n_layers, 1)
        check_int("model.n_heads", self.n_heads, 1)
        if self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )
        if self.block in ("transformer", "hope_attention") and self.head_dim % 2:
            raise ValueError(f"model.head_dim (d_model / n_heads = {self.head_dim}) must be even for RoPE")
        check_number("model.mlp_mult", self.mlp_mult, lo_open=True)
        check_number("model.norm_eps", self.norm_eps, lo_open=True)
        check_number("model.rope_theta", self.rope_theta, lo_open=True)
        check_number("model.init_std", self.init_std, lo_open=True)
        self.titans.validate()
        self.cms.validate()

    @property
    def uses_titans(self) -> bool:
        return self.block in ("hope", "titans")

    @property
    def uses_cms(self) -> bool:
        return self.block in ("hope", "hope_attention")

    # ---- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        titans = dict(data.pop("titans", {}))
        surprise = SurpriseConfig(**titans.pop("surprise", {}))
        cms = dict(data.pop("cms", {}))
        if "chunk_sizes" in cms:
            cms["chunk_sizes"] = tuple(cms["chunk_sizes"])
        _reject_unknown("model", cls, data)
        _reject_unknown("titans", TitansConfig, titans)
        _reject_unknown("cms", CMSConfig, cms)
        return cls(**data, titans=TitansConfig(**titans, surprise=surprise), cms=CMSConfig(**cms))

    # ---- presets -------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, size: str = "tiny", **overrides: Any) -> ModelConfig:
        """Named architecture (`PRESETS`) at a named size (`SIZES`), then `overrides` applied."""
        if name not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        if size not in SIZES:
            raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
        data = cls(name=name).to_dict()
        matched = MATCHED_CMS_EXPANSION.get(size, {}).get(name)
        size_keys = SIZES[size] if matched is None else {**SIZES[size], "cms.expansion": matched}
        for key, value in {**size_keys, **PRESETS[name]}.items():
            _set_dotted(data, key, value)
        for key, value in overrides.items():
            _set_dotted(data, key, value)
        return cls.from_dict(data)


def _reject_unknown(owner: str, klass: type, data: dict[str, Any]) -> None:
    known = {f.name for f in fields(klass)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {owner} field(s) {unknown}; accepted: {sorted(known)}")


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.removeprefix("model.").split(".")
    target = data
    for part in parts[:-1]:
        if part not in target or not isinstance(target[part], dict):
            raise ValueError(f"unknown config field {key!r}: {part!r} is not a nested config")
        target = target[part]
    if parts[-1] not in target:
        raise ValueError(f"unknown config field {key!r}; accepted at that level: {sorted(target)}")
    if isinstance(value, list):
        value = tuple(value)
    target[parts[-1]] = value


# Titans chunks of 32 at the GPU sizes: one hope layer at 125m (B 8, T 4096, an H200, 2026-12-02) took
# 133 ms forward + backward with the backward kernels, against 177 ms at chunk 64, whose backward
# kernel needs more shared memory than an H100 / H200 has (so it took the vjp), and 136 ms at chunk 16
# (with 1.6x the memory of 32). The reference's range is C in [16, 128].
_GPU = {"titans.chunk_size": 32, "titans.checkpoint_chunks": True}

# Size presets: width, depth, heads. CMS chunk sizes shrink with the CPU sizes so that tests see
# several boundaries in a short sequence. tiny's Titans chunk of 16 keeps 8 chunk steps in the
# 128-token sequences `hope train` uses; on a CPU each chunk costs a fixed ~100 small tensor ops,
# so 16 trains ~1.25x as many tokens a second as 8 did (issue 13).
SIZES: dict[str, dict[str, Any]] = {
    # `hope train`'s default, the CPU quick start (issue 13): one block of tiny's width, Titans chunks
    # of 32, CMS levels of 32 and 128. On 2 cores a step of 8 x 128 bytes takes 246 ms against tiny's
    # 717; after 300 steps one block with chunks of 32 validated at 2.983 bits/byte, tiny at 2.978.
    "quick": {
        "d_model": 64,
        "n_layers": 1,
        "n_heads": 2,
        "titans.chunk_size": 32,
        "cms.chunk_sizes": (32, 128),
    },
    "tiny": {
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 2,
        "titans.chunk_size": 16,
        "cms.chunk_sizes": (16, 64),
    },
    "small": {
        "d_model": 256,
        "n_layers": 6,
        "n_heads": 4,
        "titans.chunk_size": 16,
        "cms.chunk_sizes": (64, 256),
    },
    "125m": {"d_model": 768, "n_layers": 12, "n_heads": 12, **_GPU},
    "350m": {"d_model": 1024, "n_layers": 24, "n_heads": 16, **_GPU},
    "760m": {"d_model": 1536, "n_layers": 24, "n_heads": 16, **_GPU},
}

_MATRIX_BASELINE: dict[str, Any] = {
    "block": "titans",
    "titans.self_modifying": False,
    "titans.self_generated_values": False,
    "titans.memory": "matrix",
    "titans.memory_depth": 1,
    "titans.objective": "dot",
    "titans.retrieval": "inclusive",
    "titans.decay": False,
    "titans.decay_to": "zero",
    "titans.init": "zero",
    "titans.error_clip": 0.0,
    "titans.eta_init": 0.5,
}

# Architecture presets, each a configuration of the same core.
PRESETS: dict[str, dict[str, Any]] = {
    "hope": {"block": "hope", "titans.surprise.mode": "relative", "titans.surprise.threshold": -1.0},
    "hope-no-surprise": {"block": "hope"},
    "hope-no-cms": {
        "block": "hope",
        "titans.surprise.mode": "relative",
        "titans.surprise.threshold": -1.0,
        "cms.error": "none",
        "cms.chunk_sizes": (1,),
    },
    "hope-no-selfmod": {
        "block": "hope",
        "titans.self_modifying": False,
        "titans.self_generated_values": False,
        "titans.surprise.mode": "relative",
        "titans.surprise.threshold": -1.0,
    },
    "hope-attention": {"block": "hope_attention"},
    "titans": {
        "block": "titans",
        "titans.self_modifying": False,
        "titans.self_generated_values": False,
        "titans.update_rule": "momentum",
        "titans.eta_init": 0.002,
    },
    "transformer": {"block": "transformer"},
    # The DeltaNet family (Katharopoulos et al. 2020; Yang et al. 2024a, 2024b): a Titans block with
    # static projections, L2-normalised q/k, a short convolution and one matrix memory per head, read
    # after each token's write; no surprise gate or error clip, memories start at zero.
    "linear-attention": {**_MATRIX_BASELINE, "titans.update_rule": "gd", "titans.learn_eta": False},
    "deltanet": {**_MATRIX_BASELINE, "titans.update_rule": "dgd"},
    "gated-deltanet": {**_MATRIX_BASELINE, "titans.update_rule": "dgd", "titans.decay": True},
}


# Parameter matching (±5% of `transformer` at the same size, so comparisons are fair). A HOPE block carries the
# Titans layer and K = 3 CMS levels, each with its own key/value read-outs (2 d² a level) where a
# Transformer++ block has one SwiGLU MLP, so at the GPU sizes the levels keep the paper's structure
# (three frequencies, residual MLPs) with a smaller hidden width, a multiple of 64 (hidden = e·d).
MATCHED_CMS_EXPANSION: dict[str, dict[str, float]] = {
    "125m": {
        "hope": 5 / 12,
        "hope-no-surprise": 5 / 12,
        "hope-no-selfmod": 1 / 4,
        "hope-attention": 1 / 3,
        "hope-no-cms": 4.0,
    },
    "350m": {
        "hope": 1 / 2,
        "hope-no-surprise": 1 / 2,
        "hope-no-selfmod": 5 / 16,
        "hope-attention": 11 / 32,
        "hope-no-cms": 4.5,
    },
}
