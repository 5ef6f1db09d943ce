"""hope: Nested Learning (HOPE, self-referential Titans, CMS) in PyTorch."""

from hope.config import CMSConfig, ModelConfig, SurpriseConfig, TitansConfig

__all__ = ["CMSConfig", "ModelConfig", "SurpriseConfig", "TitansConfig"]
__version__ = "0.1.0"
