import os

import pytest
import torch

# Tiny tensors gain nothing from intra-op threads, and oversubscribed threads make CPU runs crawl.
torch.set_num_threads(1)

# Without a GPU the Triton kernels run in Triton's interpreter, so CI exercises their real code.
# Set before any kernel module is imported: `triton.jit` reads it when it decorates a kernel.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    # One token cache per test session: tests share the tokenised corpus and never touch ~/.cache.
    monkeypatch.setenv("HOPE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "hope-cache"))


@pytest.fixture(autouse=True)
def _ieee_float32():
    # Every test starts at PyTorch's default IEEE float32 products: a CUDA command (pick_device) turns
    # on TF32 for the whole process, which would loosen the GPU equivalence tests that follow it.
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")
