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

Records get committed (`figures/reference_run/`, `figures/runs/`), so they hold no absolute path of the
machine that wrote them: `portable` rewrites each one relative to a named folder (`<build>`, `<checkout>`,
the data folder as `<CPEN455 data>` or `<synthetic data>`, `~`), and one outside every named folder keeps
only its file name, under `<elsewhere>`. `runs_index` writes the index of a folder of run folders.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from pcnn.config import RunConfig
from pcnn.datasets import SYNTHETIC_MARKER

LOSS_HEADER = "step,loss"
ELSEWHERE = "<elsewhere>"


# ------------------------------------------------------------------------------------- portable paths


def data_label(root: str | Path) -> str:
    """How a record names the data folder: `<synthetic data>` for the generated set, else `<CPEN455 data>`."""
    return "<synthetic data>" if (Path(root) / SYNTHETIC_MARKER).is_file() else "<CPEN455 data>"


def _is_absolute(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or PureWindowsPath(text).is_absolute()


def _root_patterns(roots: Mapping[str | Path, str]) -> list[tuple[re.Pattern[str], str]]:
    """One pattern per root (as given and resolved), longest first, so the most specific root wins."""
    spelled: dict[str, str] = {}
    for root, label in roots.items():
        for form in {str(Path(root)), str(Path(root).resolve())}:
            if len(Path(form).parts) > 1:  # never `/` itself: every path would match it
                spelled.setdefault(form.rstrip("/\\"), label)
    patterns = []
    for form in sorted(spelled, key=len, reverse=True):
        # a whole path: where a path can start (not inside `/x/a/build`), and followed by a separator or
        # where a path can end (not a prefix of a longer name: `/a/build2`)
        start, end = r"(?<![^\s'\"(=:,\[])", r"(?P<sep>[/\\]|(?![^\s'\"),;:\]]))"
        patterns.append((re.compile(start + re.escape(form) + end), spelled[form]))
    return patterns


def _rewrite(text: str, patterns: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, label in patterns:

        def replace(match: re.Match[str], label: str = label) -> str:
            if match.group("sep"):
                return f"{label}/" if label else ""
            return label or "."

        text = pattern.sub(replace, text)
    if _is_absolute(text) and not any(ch.isspace() for ch in text):  # a path, not a sentence
        name = PurePosixPath(text).name or PureWindowsPath(text).name
        text = f"{ELSEWHERE}/{name}" if name else ELSEWHERE
    return text


def portable(value: Any, roots: Mapping[str | Path, str]) -> Any:
    """`value` (JSON-like: dicts, lists, strings) with no absolute path of this machine left in it.

    `roots` maps folders to the label that replaces them: `{build: "<build>", data: "<CPEN455 data>"}`
    turns `/home/me/pcnn/build/cpu/runs/main` into `<build>/runs/main`; an empty label makes the path
    plain relative (the root itself becomes `.`). Roots are matched inside longer strings as well (an error
    message naming a file). A string that is one absolute path outside every root keeps its file name
    only, as `<elsewhere>/name`. Other values are returned unchanged.
    """
    patterns = _root_patterns(roots)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return _rewrite(item, patterns)
        if isinstance(item, Mapping):
            return {key: walk(val) for key, val in item.items()}
        if isinstance(item, (list, tuple)):
            return [walk(val) for val in item]
        return item

    return walk(value)


def local_path(text: str, roots: Mapping[str | Path, str]) -> Path:
    """The folder a `portable` path names on this machine: its leading label (`<checkout>/figures/...`)
    replaced by the root that `roots` (as for `portable`) gives that label."""
    for root, label in roots.items():
        if label and (text == label or text.startswith(label + "/")):
            return Path(root) / text[len(label) + 1 :]
    return Path(text)


def machine_roots(data_root: str | Path | None = None, **named: str | Path | None) -> dict[str, str]:
    """The roots of `portable` for a record of this machine: `named` folders (`build=...` is labelled
    `<build>`), the data folder by `data_label`, and the home folder as `~`."""
    roots: dict[str, str] = {str(Path.home()): "~"}
    if data_root is not None:
        roots[str(data_root)] = data_label(data_root)
    for name, folder in named.items():
        if folder is not None:
            roots[str(folder)] = f"<{name}>"
    return roots


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
    """What produced a run: code version, packages, hardware and the command line.

    The entry is `portable`: the program is named without its folder, the data folder (`extra`'s
    `data_dir`) by `data_label`, and paths under the working folder relative to it, as typed there.
    """
    gpu = None
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
    data_dir = (extra or {}).get("data_dir")
    roots = {**machine_roots(data_dir), str(Path.cwd()): ""}
    program = [Path(sys.argv[0]).name] if sys.argv and sys.argv[0] else []
    entry = {
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_state(Path(__file__).resolve().parent),
        "command": program + sys.argv[1:],
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
    return portable(entry, roots)


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


# ---------------------------------------------------------------------------------------- runs index

RUNS_INDEX_HEADER = """# Training runs beside the reference build

Each folder is one training run's records: `config.json` (the resolved configuration), `provenance.json`
(commit, packages, hardware, command), `metrics.jsonl` (one line per evaluation), `train_loss.csv` (every
step's loss), where measured `validation_metrics*.json` (`pcnn evaluate` of the last checkpoint), and a
`README.md` with the exact commands and what the run shows. None of them is the committed reference build:
that is `../reference_run/` (the run of `checkpoints/reference.pt`) with the figures beside it.

Generated from each folder's records by `python -m pcnn.runrecord figures/runs` (a test fails when it
drifts): the last evaluation of each run, from `validation_metrics.json` when the run has one, else from
the last line of `metrics.jsonl`; validation split, bootstrap 95% interval where recorded.
"""


def _run_title(folder: Path) -> str:
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text().splitlines():
            if line.startswith("# "):
                return line[2:].strip()
    return "(no README)"


def run_summary(folder: str | Path) -> dict[str, Any]:
    """The numbers the index shows for one run folder, read from its own records only."""
    folder = Path(folder)
    last = (read_metrics(folder) or [{}])[-1]
    summary = {
        "name": folder.name,
        "title": _run_title(folder),
        "steps": last.get("step"),
        "epochs": last.get("epoch"),
        "minutes": last["wall_time_s"] / 60 if isinstance(last.get("wall_time_s"), (int, float)) else None,
        "weights": last.get("weights"),
        "accuracy": last.get("val_accuracy"),
        "accuracy_ci95": None,
        "macro_f1": last.get("val_f1"),
        "bits_per_dim": last.get("val_bits_per_dim"),
        "source": "metrics.jsonl",
    }
    measured = folder / "validation_metrics.json"
    if measured.is_file():
        data = json.loads(measured.read_text())
        summary.update(
            accuracy=data.get("accuracy"),
            accuracy_ci95=data.get("accuracy_ci95"),
            macro_f1=data.get("macro_f1"),
            bits_per_dim=data.get("bits_per_dim"),
            source="validation_metrics.json",
        )
    return summary


def _number(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, (int, float)) else "n/a"


def runs_index(folder: str | Path) -> str:
    """`README.md` of a folder of run folders: one table row per run (a folder with `metrics.jsonl`)."""
    folder = Path(folder)
    runs = sorted(p for p in folder.iterdir() if (p / "metrics.jsonl").is_file())
    lines = [
        RUNS_INDEX_HEADER,
        "| folder | what it is | steps | epoch | minutes | weights | validation accuracy % [95% CI] "
        "| macro F1 | bits/dim | numbers from |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        s = run_summary(run)
        ci = s["accuracy_ci95"]
        interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else " (no interval recorded)"
        accuracy = _number(s["accuracy"], "{:.1%}").rstrip("%")
        accuracy += interval if s["accuracy"] is not None else ""
        cells = [
            f"[`{s['name']}/`]({s['name']}/README.md)",
            s["title"].replace("|", "\\|"),
            _number(s["steps"], "{:d}"),
            _number(s["epochs"], "{:d}"),
            _number(s["minutes"], "{:.0f}"),
            s["weights"] or "n/a",
            accuracy,
            _number(s["macro_f1"], "{:.3f}"),
            _number(s["bits_per_dim"], "{:.2f}"),
            f"`{s['source']}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_runs_index(folder: str | Path) -> Path:
    """Write (or rewrite) `<folder>/README.md` from the run folders in it."""
    path = Path(folder) / "README.md"
    _write_atomic(path, runs_index(folder))
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m pcnn.runrecord FOLDER`: write FOLDER/README.md, the index of its run folders.
    `python -m pcnn.runrecord publish RUN DEST ...` publishes a run's records (`pcnn.workflow.publish`)."""
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["publish"]:
        from pcnn.workflow.publish import main as publish_main

        return publish_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m pcnn.runrecord",
        description=main.__doc__,
        epilog="python -m pcnn.runrecord publish --help: the options of publishing a run",
    )
    parser.add_argument("folder", help="a folder of run folders, e.g. figures/runs")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    print(f"wrote {write_runs_index(args.folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
