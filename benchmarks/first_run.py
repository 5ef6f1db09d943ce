"""The README's quick start, rerun and timed, beside the matched Transformer++ at the same budget.

    python benchmarks/first_run.py [--out runs/first_run] [--install]

1. ``hope train`` with no options (HOPE at size quick on the built-in corpus, CPU) into OUT/hope, timed from
   the command's start to its end, then ``hope generate --run OUT/hope --prompt "ROMEO:"``;
   ``--install`` first times ``bash scripts/install.sh`` as the quick start does.
2. The Transformer++ that `hope.matched_transformer` matches to it (same depth and heads, width
   chosen for ±5% of the parameters), trained with the same recipe but ``--minutes`` set to the HOPE
   run's training time, so both get the same wall clock.

Writes OUT/results.json and OUT/results.md (time, parameters, steps, tokens/s, validation bits per
byte, the first lines of each sample) and prints the table. Not a test: it asserts nothing; timings
depend on the machine and on whatever else runs on it (the load average is recorded).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import hope
from hope.train import TrainConfig

PROMPT = "ROMEO:"
SAMPLE_LINES = 8


def _run(cmd: list[str], log: Path) -> float:
    """Runs ``cmd`` with its output in ``log``; returns its wall-clock seconds (fails loudly)."""
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - start


def _summary(run_dir: Path, seconds: float) -> dict:
    config = json.loads((run_dir / "config.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"][-1]
    return {
        "preset": config["train"]["preset"],
        "model": {k: config["model"][k] for k in ("d_model", "n_layers", "n_heads")},
        "n_params": config["n_params"],
        "seconds": round(seconds, 1),
        "steps": val["step"],
        "tokens": train[-1]["tokens"],
        "tok_per_s": round(sum(r["tok_per_s"] for r in train) / len(train)),
        "val_loss": round(val["loss"], 4),
        "val_bpb": round(val["bpb"], 3),
        "budget": config.get("budget"),
    }


def _generate(run_dir: Path, log: Path) -> str:
    _run(["hope", "generate", "--run", str(run_dir), "--prompt", PROMPT], log)
    return log.read_text()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/first_run", help="output directory (default: runs/first_run)")
    p.add_argument("--install", action="store_true", help="time `bash scripts/install.sh` first")
    args = p.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    results = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU ({platform.processor() or platform.machine()})",
        "load_average_before": os.getloadavg(),
        # On a shared machine two intra-op threads can stall each other for milliseconds an op.
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset (torch default)"),
        "hope_version": hope.__version__,
    }
    if args.install:
        results["install_seconds"] = round(_run(["bash", "scripts/install.sh"], out / "install.log"), 1)

    hope_dir = out / "hope"
    seconds = _run(["hope", "train", "--out", str(hope_dir)], out / "hope_train.log")
    results["hope"] = _summary(hope_dir, seconds)
    results["hope"]["sample"] = _generate(hope_dir, out / "hope_generate.log")

    # The same recipe (TrainConfig's defaults), the same wall clock for the training steps.
    defaults = TrainConfig()
    matched = hope.matched_transformer(defaults.model_config(256))
    train_seconds = _train_seconds(hope_dir)
    tf_dir = out / "transformer"
    argv = ["hope", "train", "--preset", "transformer", "--out", str(tf_dir)]
    argv += ["--minutes", f"{train_seconds / 60:.4f}"]
    argv += [f"--model.{k}={getattr(matched, k)}" for k in ("d_model", "n_layers", "n_heads")]
    seconds = _run(argv, out / "transformer_train.log")
    results["transformer"] = _summary(tf_dir, seconds)
    results["transformer"]["sample"] = _generate(tf_dir, out / "transformer_generate.log")
    results["load_average_after"] = os.getloadavg()

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = _table(results)
    (out / "results.md").write_text(table)
    print(table)
    return 0


def _train_seconds(run_dir: Path) -> float:
    """Seconds the run spent training and evaluating: from config.json's write (just before the first
    step) to metrics.jsonl's last line (the final evaluation)."""
    return (run_dir / "metrics.jsonl").stat().st_mtime - (run_dir / "config.json").stat().st_mtime


def _table(results: dict) -> str:
    load, threads = results["load_average_before"][0], results["omp_num_threads"]
    rows = [
        f"# First run ({results['date']}, {results['machine']}, load average before {load:.2f}, threads {threads})",
        "",
        "| model | parameters | `hope train` wall time | steps | tokens/s | val bits/byte |",
        "|---|---|---|---|---|---|",
    ]
    for key in ("hope", "transformer"):
        r = results[key]
        rows.append(
            f"| {r['preset']} (d={r['model']['d_model']}, {r['model']['n_layers']} layers) | {r['n_params']:,} "
            f"| {r['seconds']:.0f} s | {r['steps']} | {r['tok_per_s']:,} | {r['val_bpb']:.3f} |"
        )
    if "install_seconds" in results:
        rows += ["", f"`bash scripts/install.sh`: {results['install_seconds']:.0f} s."]
    for key in ("hope", "transformer"):
        lines = results[key]["sample"].strip().splitlines()[:SAMPLE_LINES]
        rows += ["", f"`hope generate --prompt {PROMPT!r}` ({key}):", "", "```", *lines, "```"]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
