"""The built-in training corpus: Shakespeare's works, vendored as gzip-compressed text (see CORPUS.md)."""

import functools
import gzip
from pathlib import Path

BUILTIN = "builtin"
"""The name ``--data`` takes (and the default) for the built-in corpus."""

BUILTIN_PATH = Path(__file__).with_name("shakespeare.txt.gz")


@functools.lru_cache(maxsize=1)
def builtin_text() -> str:
    """Shakespeare's 42 modern-spelling works as one string (~5 MB of ASCII English, no network needed)."""
    if not BUILTIN_PATH.is_file():
        raise FileNotFoundError(
            f"the built-in corpus {BUILTIN_PATH} is missing from this installation; reinstall hope "
            "or pass --data with your own text files"
        )
    return gzip.decompress(BUILTIN_PATH.read_bytes()).decode("utf-8")
