import sys
from pathlib import Path

# Let `hope.optim` import from the source tree when the package is not installed; it imports nothing
# else from `hope`, so these tests run even while the rest of the package is mid-edit.
_SRC = str(Path(__file__).resolve().parents[2] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)
