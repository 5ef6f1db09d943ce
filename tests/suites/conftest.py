import importlib
import sys
import types
from pathlib import Path

# Import `hope.suites` from the source tree. It needs nothing from the rest of `hope`, so when the
# top-level package fails to import (another part mid-edit) it is loaded under a bare `hope` stub.
_SRC = Path(__file__).resolve().parents[2] / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))
try:
    importlib.import_module("hope.suites")
except Exception:  # noqa: BLE001 - any failure of hope/__init__.py is someone else's edit in progress
    for mod in [m for m in sys.modules if m == "hope" or m.startswith("hope.")]:
        del sys.modules[mod]
    stub = types.ModuleType("hope")
    stub.__path__ = [str(_SRC / "hope")]
    sys.modules["hope"] = stub
    importlib.import_module("hope.suites")
