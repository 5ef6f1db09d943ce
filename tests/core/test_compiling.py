"""hope.ops.compiling: the layers' pieces compile once per function, with the inductor options a
benchmark set."""

import torch

from hope.ops import compiling


def test_a_function_compiles_once_with_the_options_set(monkeypatch):
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    monkeypatch.setattr(compiling, "INDUCTOR", {"combo_kernels": True})
    compiling.compiled.cache_clear()

    def piece(x):
        return x + 1

    assert compiling.compiled(piece) is piece and compiling.compiled(piece) is piece
    assert seen == [{"dynamic": False, "fullgraph": False, "options": {"combo_kernels": True}}]
    compiling.compiled.cache_clear()
