"""A tiny transformer run that trains in about a second on a CPU: as TrainConfig fields and, through
:func:`train_argv`, as ``hope train`` options."""

TINY = {
    "preset": "transformer",
    "size": "tiny",  # pinned: `hope train`'s default size is the quick start's
    "model_overrides": {"d_model": 32, "n_layers": 1},
    "seq_len": 32,
    "batch_size": 4,
    "eval_batches": 2,
    "sample_tokens": 0,
    "device": "cpu",
}


def train_argv(**fields) -> list[str]:
    """``hope train`` options for :data:`TINY` with ``fields`` changed (model fields as dotted options)."""
    argv = []
    for name, value in {**TINY, **fields}.items():
        if name == "model_overrides":
            for key, v in value.items():
                argv += [f"--{key}" if "." in key else f"--model.{key}", str(v)]
        elif isinstance(value, list):
            argv += [f"--{name.replace('_', '-')}", *map(str, value)]
        else:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv
