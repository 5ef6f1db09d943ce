"""The associative-memory core: memories, inner objectives, update rules (reference) and the scan."""

from hope.memory.core import MemorySpec
from hope.memory.scan import memory_scan

__all__ = ["MemorySpec", "memory_scan"]
