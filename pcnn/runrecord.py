"""The run folder: resolved config, provenance, per-evaluation metrics and the per-step training loss.

Layout of a run folder::

    config.json        the resolved RunConfig (every field), rewritten when a resumed run changes it
    provenance.json    one entry per session: git commit, package versions, device, command line
    metrics.jsonl      one JSON object per evaluation
    train_loss.csv     step,loss for every optimiser step, losses written with repr (full precision)
    checkpoints/       last.pt, best.pt, epoch_XXXX.pt
    samples/           sample grids, epoch_XXXX.png
    tensorboard/       optional TensorBoard events

A resumed run first cuts metrics.jsonl and train_loss.csv back to the checkpoint's step, so steps taken
after the checkpoint by an interrupted session are replaced rather than duplicated.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from pcnn.config import RunConfig

LOSS_HEADER = "step,loss"


def _git_state(where: Path) -> dict[str, Any]:
    """The commit and dirtiness of the git checkout holding `where`, or why it is unknown."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return {"commit": None, "dirty": None, "error": type(exc).__name__}
    return {"commit": commit, "dirty": bool(status.strip())}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced a run: code version, packages, hardware and the command line."""
    gpu = None
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    return {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_state(Path(__file__).resolve().parent),
        "command": sys.argv,
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("pcnn", "torch", "torchvision", "numpy", "pillow")},
        "platform": platform.platform(),
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
        "cuda": torch.version.cuda,
        **(extra or {}),
    }


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunRecord:
    """Writes one run folder (only the main process of a data-parallel job creates one)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.dir = Path(run_dir)
        self.checkpoints = self.dir / "checkpoints"
        self.samples = self.dir / "samples"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints.mkdir(exist_ok=True)
        self.loss_path = self.dir / "train_loss.csv"
        self.metrics_path = self.dir / "metrics.jsonl"
        self._loss_file = None

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def sample_grid(self, epoch: int) -> Path:
        return self.samples / f"epoch_{epoch:04d}.png"

    def write_config(self, config: RunConfig) -> None:
        _write_atomic(self.dir / "config.json", config.to_json() + "\n")

    def read_config(self) -> RunConfig | None:
        path = self.dir / "config.json"
        return RunConfig.from_dict(json.loads(path.read_text())) if path.is_file() else None

    def add_provenance(self, entry: dict[str, Any]) -> None:
        """Append this session's provenance (a resumed run has several sessions)."""
        path = self.dir / "provenance.json"
        sessions = json.loads(path.read_text())["sessions"] if path.is_file() else []
        sessions.append(entry)
        _write_atomic(path, json.dumps({"sessions": sessions}, indent=2) + "\n")

    def start(self, step: int) -> None:
        """Open the logs for a session starting after optimiser step `step` (0: a fresh run, logs emptied)."""
        if step == 0 or not self.loss_path.is_file():
            self.loss_path.write_text(LOSS_HEADER + "\n")
        else:
            lines = self.loss_path.read_text().splitlines()
            kept = [line for line in lines[1:] if line and int(line.split(",", 1)[0]) <= step]
            _write_atomic(self.loss_path, "\n".join([LOSS_HEADER, *kept]) + "\n")
        if step == 0 or not self.metrics_path.is_file():
            self.metrics_path.write_text("")
        else:
            lines = self.metrics_path.read_text().splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
            _write_atomic(self.metrics_path, "".join(line + "\n" for line in kept))
        self._loss_file = self.loss_path.open("a", buffering=1)  # line-buffered: a killed run loses no row

    def log_loss(self, step: int, loss: float) -> None:
        self._loss_file.write(f"{step},{loss!r}\n")

    def flush(self) -> None:
        """Make every logged loss durable: called before each checkpoint, so the log never lags one."""
        if self._loss_file is not None:
            self._loss_file.flush()
            os.fsync(self._loss_file.fileno())

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(metrics, sort_keys=True) + "\n")

    def close(self) -> None:
        if self._loss_file is not None:
            self.flush()
            self._loss_file.close()
            self._loss_file = None


def read_losses(run_dir: str | Path) -> list[tuple[int, float]]:
    """(step, loss) pairs of a run's train_loss.csv, losses parsed back exactly."""
    lines = (Path(run_dir) / "train_loss.csv").read_text().splitlines()
    return [(int(a), float(b)) for a, b in (line.split(",") for line in lines[1:] if line)]


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The evaluations of a run, one dict per metrics.jsonl line."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
