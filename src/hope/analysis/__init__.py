"""Measurements of the "Dissecting HOPE" study: self-modification drift, CMS level redundancy, surprise."""

from hope.analysis.dissect import cms_level_similarity, selfmod_drift, surprise_profile

__all__ = ["cms_level_similarity", "selfmod_drift", "surprise_profile"]
