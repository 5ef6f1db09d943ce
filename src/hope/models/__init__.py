"""Blocks and the language model."""
