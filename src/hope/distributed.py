"""Process-group plumbing for `torchrun`: DDP or FSDP2 wrapping and the few collectives the trainer uses.

Outside `torchrun` (no ``WORLD_SIZE`` in the environment) everything here degrades to single-process
no-ops, so the trainer has one code path.
"""

import os
from datetime import timedelta

import torch
import torch.distributed as td
from torch import nn


def is_distributed() -> bool:
    return td.is_available() and td.is_initialized()


def rank() -> int:
    return td.get_rank() if is_distributed() else 0


def world_size() -> int:
    return td.get_world_size() if is_distributed() else 1


def pick_device(preference: str) -> torch.device:
    """The device a command runs on ("auto": CUDA where there is one). On CUDA float32 products use
    TF32: the Titans layers run in float32 outside autocast, and with IEEE products they train several
    times slower (hope-125m on an H200, 2026-12-01: 16.0 s a step against 2.7 s)."""
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("train.device is 'cuda' but no CUDA device is available")
    torch.set_float32_matmul_precision("high")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def setup(preference: str) -> torch.device:
    """Joins the process group under torchrun (NCCL on GPUs, gloo on CPUs); returns this process's device."""
    device = pick_device(preference)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not is_distributed():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        td.init_process_group(backend=backend, timeout=timedelta(minutes=10))
    return device


def teardown() -> None:
    if is_distributed():
        td.destroy_process_group()


def wrap(model: nn.Module, device: torch.device, fsdp: bool, seq_len: int) -> nn.Module:
    """DDP, or FSDP2 (``fully_shard``) on every block of every ModuleList and then the root.

    ``model`` is a ``LanguageModel``; at the training length ``seq_len`` some of its parameters may get
    no gradient (``LanguageModel.unused_parameters``).
    """
    if not is_distributed():
        return model
    if fsdp:
        if model.learns_from_lm_loss:
            # Its CMS steps run between block calls and read the initial fast weights, views of a
            # block's parameters that FSDP2 has freed by then: a segfault, so refuse it here.
            raise ValueError("cms.error='lm' does not run under FSDP2 (--fsdp); train it with DDP")
        from torch.distributed.fsdp import fully_shard

        for module in list(model.modules()):
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block)
        return fully_shard(model)
    from torch.nn.parallel import DistributedDataParallel

    # DDP fails on a parameter without a gradient unless it searches the graph for unused ones after
    # every backward pass; that search costs time, so it runs only where the model has such parameters.
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(model.unused_parameters(seq_len)),
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP and torch.compile wrappers (FSDP2 shards in place, nothing to strip)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        td.all_reduce(values, op=td.ReduceOp.SUM)
    return values


def gather_objects(obj) -> list:
    """``obj`` from every process, in rank order, on every process."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's ``obj`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        td.barrier()
