"""`hope export --run DIR --out DIR`: a training run's newest checkpoint as a `save_pretrained` folder.

The folder holds `config.json` (`HopeConfig`: the run's resolved model config), `model.safetensors`,
`generation_config.json` and the run's tokeniser as a `PreTrainedTokenizerFast` (`tokenizer.json`,
`tokenizer_config.json`). It is written under a hidden temporary name beside `--out` and renamed into
place when complete, so an interrupted export never leaves a folder that looks finished.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from hope.data.tokenizer import TOKENIZER_FILE
from hope.hf.modeling import HopeConfig, HopeForCausalLM
from hope.hf.tokenization import hf_tokenizer


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory; choose another --out")


def write_pretrained(model: HopeForCausalLM, tokenizer, out: str | Path) -> Path:
    """`model.save_pretrained` and `tokenizer.save_pretrained` into `out`, atomically (see module doc)."""
    out = Path(out)
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, out)  # replaces an empty directory, refuses anything else
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_run(run: str | Path, out: str | Path) -> tuple[Path, int]:
    """Exports the run's newest intact checkpoint to `out`; returns (out, the checkpoint's step)."""
    from hope.train import load_for_inference
    from hope.train.loop import resolve_run_dir

    _check_out(Path(out))
    try:
        model, _, _, step = load_for_inference(run, "cpu")
        config = HopeConfig.from_model_config(model.config)
    except ValueError as e:
        raise ValueError(f"cannot export {run}: {e}") from None
    hf_model = HopeForCausalLM(config)
    hf_model.model.load_state_dict(model.state_dict())
    tokenizer = hf_tokenizer(resolve_run_dir(run) / TOKENIZER_FILE)
    return write_pretrained(hf_model, tokenizer, out), step


def cmd_export(parser, args) -> int:
    """`hope export`: bad input (no run, no checkpoint, a config we cannot read) is one line on stderr."""
    try:
        out, step = export_run(args.run, args.out)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        parser.error(str(e))
    print(f"exported {args.run} (step {step}) to {out}", file=sys.stderr)
    return 0
