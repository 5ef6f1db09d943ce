"""hope: Nested Learning (HOPE, self-referential Titans, CMS) in PyTorch."""

from hope.config import CMSConfig, ModelConfig, SurpriseConfig, TitansConfig
from hope.models.lm import LanguageModel, build_model, count_parameters, match_width, matched_transformer

__all__ = [
    "CMSConfig",
    "LanguageModel",
    "ModelConfig",
    "SurpriseConfig",
    "TitansConfig",
    "build_model",
    "count_parameters",
    "match_width",
    "matched_transformer",
]
__version__ = "0.1.0"
