"""Sequence-mixing and channel-mixing layers; each carries its own streaming state."""
