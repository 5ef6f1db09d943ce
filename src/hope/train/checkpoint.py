"""Checkpoints: safetensors weights, optimizer state and a JSON record (step, RNG, data position, configs).

A checkpoint is a directory ``checkpoints/step_XXXXXXXX`` written first under a hidden temporary name
and renamed into place when complete, so a process killed at any instant leaves every finished
checkpoint intact and never one that looks finished but is not. The newest complete directory is the
one to resume from; older ones are pruned (renamed aside first, then deleted) beyond ``keep``.
Each records the SHA-256 of its weight and optimizer files, so a file damaged later (a disk error, a
copy cut short, a stray overwrite) is caught on load and the newest intact checkpoint is used instead.

State dicts go through ``torch.distributed.checkpoint.state_dict``, which gathers full tensors from
DDP, FSDP2 and ``torch.compile`` wrappers alike, so a checkpoint loads on any number of processes.
"""

import base64
import hashlib
import json
import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hope import distributed as dist
from hope.atomic import write_text_atomic

CHECKPOINTS = "checkpoints"
WEIGHTS, OPTIMIZER, STATE = "model.safetensors", "optimizer.pt", "state.json"
_STEP_DIR = re.compile(r"step_(\d{8})")


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def rng_state() -> dict:
    """This process's torch, CUDA, numpy and Python RNG states, as JSON-ready values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": _b64(torch.get_rng_state()),
        "cuda": [_b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(_unb64(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _tied_aliases(model) -> dict[str, str]:
    """{alias: first name} for parameters registered under several names (a tied LM head). Read from the
    module, not the state dict: FSDP2's gathered full state dict holds a separate copy per name."""
    first_of: dict[int, str] = {}
    aliases = {}
    for name, param in dist.unwrap(model).named_parameters(remove_duplicate=False):
        if id(param) in first_of:
            aliases[name] = first_of[id(param)]
        else:
            first_of[id(param)] = name
    return aliases


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: Path, step: int, model, optimizer, record: dict, keep: int) -> Path:
    """Collective: every process calls it, rank 0 writes. ``record``: extra JSON (configs, data position)."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=options)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    rngs = dist.gather_objects(rng_state())
    root = Path(run_dir) / CHECKPOINTS
    final = root / f"step_{step:08d}"
    if dist.rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        # Hidden leftovers are what a killed save or prune leaves behind; only one process writes a run.
        for leftover in [*root.glob(".tmp-*"), *root.glob(".trash-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        tmp = root / f".tmp-{final.name}-{os.getpid()}"
        tmp.mkdir()
        aliases = _tied_aliases(model)
        # safetensors refuses tensors that share memory, so each tied weight is stored once.
        tensors = {k: v.detach().contiguous() for k, v in model_state.items() if k not in aliases}
        save_file(tensors, tmp / WEIGHTS, metadata={"aliases": json.dumps(aliases)})
        with open(tmp / OPTIMIZER, "wb") as f:
            torch.save(optim_state, f)
            f.flush()
            os.fsync(f.fileno())
        checksums = {name: _sha256(tmp / name) for name in (WEIGHTS, OPTIMIZER)}
        write_text_atomic(
            tmp / STATE, json.dumps({"step": step, "rng": rngs, "checksums": checksums, **record})
        )
        _fsync_dir(tmp)
        if final.exists():  # only when a run re-saves a step it already saved; the new copy wins
            _remove(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(run_dir)[:-keep]:
            _remove(old)
    dist.barrier()
    return final


def _remove(path: Path) -> None:
    # Renaming first means a kill mid-delete leaves a hidden leftover, never a partial step_* directory.
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(_STEP_DIR.fullmatch(p.name).group(1)))


class CheckpointError(FileNotFoundError):
    """A run has checkpoints, but none of them is intact (a FileNotFoundError: no usable one exists)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damage(ckpt: Path) -> str | None:
    """What is wrong with a checkpoint's files (None: intact, by the checksums it recorded)."""
    try:
        checksums = read_record(ckpt).get("checksums")
    except (OSError, ValueError) as err:
        return f"{STATE} unreadable: {err}"
    for name in (WEIGHTS, OPTIMIZER):
        path = Path(ckpt) / name
        if not path.is_file():
            return f"{name} is missing"
        if checksums is not None and _sha256(path) != checksums.get(name):
            return f"{name} does not match the checksum written with it"
    return None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest intact checkpoint (None if the run has none); damaged newer ones are named on stderr."""
    found = list_checkpoints(run_dir)
    problems = []
    for ckpt in reversed(found):
        problem = damage(ckpt)
        if problem is None:
            for bad, why in problems:
                print(f"warning: checkpoint {bad} is damaged ({why}); using {ckpt.name}", file=sys.stderr)
            return ckpt
        problems.append((ckpt.name, problem))
    if problems:
        listed = "; ".join(f"{name}: {why}" for name, why in problems)
        raise CheckpointError(f"no intact checkpoint in {Path(run_dir) / CHECKPOINTS} ({listed})")
    return None


def read_record(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / STATE).read_text())


def load_weights(ckpt: Path, model) -> None:
    """Loads the checkpoint's weights into ``model`` (plain, DDP, FSDP2 or compiled), all keys required."""
    path = Path(ckpt) / WEIGHTS
    state = load_file(path)
    with open(path, "rb") as f:  # safetensors keeps string metadata in the header; read it without torch
        header_len = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(header_len)).get("__metadata__", {})
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        state[alias] = state[name]
    if not dist.is_distributed() and dist.unwrap(model) is model:
        # A plain module loads its own state; torch.distributed.checkpoint costs 1.6 s to import.
        model.load_state_dict(state, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def load_checkpoint(ckpt: Path, model, optimizer) -> dict:
    """Restores weights, optimizer state and this process's RNG; returns the checkpoint's JSON record."""
    load_weights(ckpt, model)
    optim_state = torch.load(Path(ckpt) / OPTIMIZER, map_location="cpu", weights_only=True)
    _load_optimizer_state(model, optimizer, optim_state)
    record = read_record(ckpt)
    rngs = record["rng"]
    # A resume on a different number of processes reuses rank 0's RNG state where a rank has none.
    set_rng_state(rngs[dist.rank()] if dist.rank() < len(rngs) else rngs[0])
    return record


def _load_optimizer_state(model, optimizer, optim_state: dict) -> None:
    """Loads the optimizer state that ``save_checkpoint`` wrote, and no more.

    A parameter that never had a gradient (the read-outs of a CMS level whose chunk is at least the
    training sequence's length) has no saved state. torch first makes state for every parameter (one
    step with zero gradients at lr 0), then, if strict, refuses such a checkpoint; if not, it keeps
    the made-up state, which would change that parameter's first real update and the next checkpoint.
    Hence not strict, and that state dropped again.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True, strict=False)
    )
    saved = optim_state["state"].keys()
    kept = {id(p) for name, p in dist.unwrap(model).named_parameters(remove_duplicate=False) if name in saved}
    for param in [p for p in optimizer.state if id(p) not in kept]:
        del optimizer.state[param]
