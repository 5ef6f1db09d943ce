"""Run logging: ``metrics.jsonl`` (always), TensorBoard event files (with ``tensorboard``), ``loss.png``."""

import io
import json
import math
import sys
from pathlib import Path

from hope.atomic import write_bytes_atomic, write_text_atomic

METRICS = "metrics.jsonl"
PLOT = "loss.png"
TENSORBOARD = "tensorboard"


class MetricsLogger:
    """Appends one JSON object per record. On resume from step k, records after k are dropped first (a
    killed run may have logged steps its last checkpoint does not cover), so the log reads as one run."""

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = Path(run_dir) / METRICS
        if resume_step is not None and self.path.exists():
            kept = [r for r in _parse(self.path.read_text()) if r["step"] <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run; close() closes it
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print(
                "tensorboard is not installed: metrics go to metrics.jsonl only (pip install tensorboard)",
                file=sys.stderr,
            )
            self._tb = None
        else:
            # purge_step hides events a killed run wrote past the checkpoint we resume from.
            purge = resume_step + 1 if resume_step is not None else None
            self._tb = SummaryWriter(str(Path(run_dir) / TENSORBOARD), purge_step=purge)

    def log(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            split = record.get("split", "train")
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{split}/{key}", value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _parse(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # the torn last line of a process killed mid-write
    return records


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    return _parse(path.read_text()) if path.exists() else []


def plot_losses(run_dir: Path) -> Path:
    """Writes ``loss.png``: training and validation loss against step."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never steal focus from a desktop session
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for split, style in (("train", "-"), ("val", "o-")):
        points = [(r["step"], r["loss"]) for r in records if r.get("split") == split]
        if points:
            steps, losses = zip(*points, strict=True)
            ax.plot(steps, losses, style, label=split, markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats / token)")
    ax.set_title(Path(run_dir).resolve().name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path = Path(run_dir) / PLOT
    write_bytes_atomic(path, buf.getvalue())
    return path
