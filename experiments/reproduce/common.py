"""What every reproduction command shares: its command line (``--scale cpu|paper``), running one configuration
through ``train()``, reading its PSNR curve, and writing the paper-vs-ours table with the protocol, the command, the
commit and the machine that produced it (``experiments/reproduce/results/<name>_<scale>.{md,json}``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "reproduce" / "results"
RUNS = ROOT / "outputs" / "reproduce"
SCALES = ("cpu", "paper")
# No logger, callbacks or progress bar: a table's runs write only their outputs.
QUIET = ["logger=none", "callbacks=none", "trainer.enable_progress_bar=false"]


def parser(doc: str) -> argparse.ArgumentParser:
    """The shared options; a command adds its own."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=SCALES, default="cpu", help="cpu: reduced sizes and steps; paper: the papers'")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--device", default="auto", help="trainer.accelerator: auto, cpu, gpu")
    p.add_argument("--runs", default=None, help="where the runs write (default outputs/reproduce/<name>_<scale>)")
    p.add_argument("--results", default=str(RESULTS), help="where the table goes")
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    p.add_argument("--table-only", action="store_true", help="rebuild the table from existing runs")
    return p


def setup(args) -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def run_dir(args, name: str, *parts: str) -> Path:
    base = Path(args.runs) if args.runs else RUNS / f"{name}_{args.scale}"
    return base.joinpath(*parts)


def fit(overrides: list[str], output_dir: Path, args=None, reuse: bool = False) -> dict:
    """One configuration through ``train()`` (the code path of ``python train.py``); its metrics.json.
    ``reuse``: return the metrics of a finished run in ``output_dir`` instead of fitting again."""
    metrics_file = output_dir / "metrics.json"
    if reuse and metrics_file.is_file():
        metrics = json.loads(metrics_file.read_text())
        if metrics.get("status") == "completed":
            return metrics
    from untrained.run import compose
    from untrained.train import train

    extra = [] if args is None else [f"trainer.accelerator={args.device}", *args.override]
    return train(compose([*QUIET, *overrides, *extra, f"paths.output_dir={output_dir}"]))


def curve(output_dir: Path, key: str = "psnr") -> tuple[list[int], list[float]]:
    """A run's (steps, values) from history.json, the steps where the value was recorded."""
    history = json.loads((output_dir / "history.json").read_text())
    pairs = [(s, v) for s, v in zip(history["step"], history.get(key, [])) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
    return (result.stdout.strip() or "unknown") + ("+changes" if dirty.stdout.strip() else "")


def machine() -> str:
    import torch

    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()} CPU cores"
    return f"{cpu}; {device}; {torch.get_num_threads()} torch threads; torch {torch.__version__}"


def number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


@dataclass
class Table:
    """A paper-vs-ours table: each row a quantity (a PSNR or a relation between two methods) with the paper's value,
    ours, the difference and a verdict or diagnosis."""

    name: str
    title: str
    source: str  # the paper, its table or figure, and the reference file the settings come from
    protocol: str  # what ran: images, sizes, steps, seeds, and at cpu scale what was reduced
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown lines after the notes, as they are (e.g. a table)
    data: dict = field(default_factory=dict)  # everything else worth keeping (per-run metrics) for the json

    def add(self, quantity: str, paper: float | None, ours: float | None, verdict: str = "", unit: str = "dB"):
        difference = None if paper is None or ours is None else ours - paper
        self.rows.append(
            {
                "quantity": quantity,
                "paper": paper,
                "ours": ours,
                "difference": difference,
                "unit": unit,
                "verdict": verdict,
            }
        )

    def markdown(self, args, wall_time_s: float) -> str:
        command = "python -m " + " ".join([f"experiments.reproduce.{self.name}", *map(shlex.quote, sys.argv[1:])])
        lines = [
            f"# {self.title}",
            "",
            f"- **Source:** {self.source}",
            f"- **Protocol ({args.scale} scale):** {self.protocol}",
            f"- **Command:** `{command}`",
            f"- **Commit:** {commit()}; **machine:** {machine()}; **wall time:** {wall_time_s / 60:.1f} min; "
            f"{time.strftime('%Y-%m-%d')}",
            "",
            "| quantity | paper | ours | ours − paper | verdict / diagnosis |",
            "|---|---|---|---|---|",
        ]
        for row in self.rows:
            unit = f" [{row['unit']}]" if row["unit"] else ""
            lines.append(
                f"| {row['quantity']}{unit} | {number(row['paper'])} | {number(row['ours'])} | "
                f"{number(row['difference'])} | {row['verdict']} |"
            )
        if self.notes:
            lines += ["", *[f"- {note}" for note in self.notes]]
        if self.details:
            lines += ["", *self.details]
        return "\n".join(lines) + "\n"

    def write(self, args, wall_time_s: float) -> Path:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        stem = results / f"{self.name}_{args.scale}"
        text = self.markdown(args, wall_time_s)
        stem.with_suffix(".md").write_text(text)
        payload = {
            "title": self.title,
            "scale": args.scale,
            "commit": commit(),
            "machine": machine(),
            "wall_time_s": wall_time_s,
            "rows": self.rows,
            "notes": self.notes,
            "details": self.details,
            "data": self.data,
        }
        stem.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=float) + "\n")
        print(text)
        return stem.with_suffix(".md")
