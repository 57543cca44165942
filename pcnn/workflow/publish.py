"""Publishing a run's records into the repository: `python -m pcnn.runrecord publish RUN DEST`.

A training run lives in `build/` (ignored by git); what gets committed under `figures/runs/<name>/` is its
records without the checkpoints: config, provenance, metrics and loss log, where measured the
`pcnn evaluate` metrics of its last checkpoint and the judged samples of `python -m pcnn.temperature_sweep`.
Every JSON record is rewritten `portable` on the way, so that a committed record names no folder of the
machine that built it (the repository becomes relative, the data folder `<CPEN455 data>`); one function
does this for every run, so records are published one way.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

from pcnn.workflow.runrecord import RUNS_INDEX_HEADER, machine_roots, portable, write_runs_index

RUN_RECORD_FILES = ("config.json", "provenance.json", "metrics.jsonl", "train_loss.csv")
SWEEP_FILES = ("sweep.json", "samples_*.png")  # the sweep's verdicts and the grids they judged
EVALUATION_FILES = ("*_metrics.json",)  # `pcnn evaluate`: validation_metrics.json, test_metrics.json


class PublishError(ValueError):
    """A run folder or a measurement folder that cannot be published as asked."""


def copy_record(source: Path, dest: Path, roots: Mapping[str, str]) -> None:
    """Copy one record; a JSON (or JSON-lines) file that names folders of this machine is rewritten
    `portable`, any other file is copied byte for byte (the manifest's hashes stay valid)."""
    json_lines = source.suffix == ".jsonl"
    if source.suffix in (".json", ".jsonl"):
        try:
            text = source.read_text()
            values = (
                [json.loads(line) for line in text.splitlines() if line.strip()]
                if json_lines
                else [json.loads(text)]
            )
        except (UnicodeDecodeError, json.JSONDecodeError):
            values = None  # not a record: copied as it is
        if values is not None:
            rewritten = [portable(value, roots) for value in values]
            if rewritten != values:
                out = (
                    "".join(json.dumps(v) + "\n" for v in rewritten)
                    if json_lines
                    else json.dumps(rewritten[0], indent=2) + "\n"
                )
                dest.write_text(out)
                return
    shutil.copy2(source, dest)


def _matching(folder: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({path for pattern in patterns for path in folder.glob(pattern) if path.is_file()})


def _recorded_commands(run: Path) -> list[str]:
    """The command line of each session of the run, as `provenance.json` recorded it."""
    path = run / "provenance.json"
    if not path.is_file():
        return []
    sessions = json.loads(path.read_text()).get("sessions", [])
    return [" ".join(session["command"]) for session in sessions if session.get("command")]


def _readme(title: str, commands: list[str]) -> str:
    lines = [
        f"# {title}",
        "",
        "Published with `python -m pcnn.runrecord publish`. The run's commands, as recorded:",
        "",
    ]
    lines += [f"    {command}" for command in commands] or ["    (no command recorded)"]
    return "\n".join(lines) + "\n"


def publish_run(
    run: str | Path,
    dest: str | Path,
    *,
    evaluation: str | Path | None = None,
    sweep: str | Path | None = None,
    data_root: str | Path | None = None,
    checkout: str | Path | None = None,
    title: str | None = None,
) -> list[Path]:
    """Copy the records of run folder `run` into `dest` (created), portable; returns the files written.

    `evaluation` is a `pcnn evaluate --out` folder (its `*_metrics.json` go beside the records, where the
    runs index reads them), `sweep` a `temperature_sweep --out` folder (`sweep.json` and its sample grids go
    to `dest/judged/`). Paths under `checkout` (default: the working folder) become relative, the data
    folder `data_root` is named by `data_label`. A `README.md` is written only where none exists, titled
    `title` and listing the recorded commands. When `dest`'s parent holds a runs index, it is rewritten.
    """
    run, dest = Path(run), Path(dest)
    if not (run / "metrics.jsonl").is_file():
        raise PublishError(
            f"{run} is not a run folder (no metrics.jsonl): give the --run-dir of a training run"
        )
    sources: list[tuple[Path, Path]] = [(run / n, dest / n) for n in RUN_RECORD_FILES if (run / n).is_file()]
    for folder, patterns, target, what in (
        (evaluation, EVALUATION_FILES, dest, "`pcnn evaluate --out` folder (no *_metrics.json)"),
        (sweep, SWEEP_FILES, dest / "judged", "`temperature_sweep --out` folder (no sweep.json)"),
    ):
        if folder is None:
            continue
        found = _matching(Path(folder), patterns)
        if not any(path.match(patterns[0]) for path in found):  # the first pattern names the one it needs
            raise PublishError(f"{folder} is not a {what}")
        sources += [(path, target / path.name) for path in found]
    roots = {**machine_roots(data_root), str(Path(checkout) if checkout else Path.cwd()): ""}
    written = []
    for source, target in sources:
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_record(source, target, roots)
        written.append(target)
    readme = dest / "README.md"
    if not readme.exists():
        readme.write_text(_readme(title or dest.name, portable(_recorded_commands(run), roots)))
        written.append(readme)
    index = dest.parent / "README.md"
    if index.is_file() and index.read_text().startswith(RUNS_INDEX_HEADER):
        written.append(write_runs_index(dest.parent))
    return written


def main(argv: list[str] | None = None) -> int:
    """`python -m pcnn.runrecord publish RUN DEST`: copy a run's records (no checkpoints) into DEST with
    no absolute path of this machine left, e.g. `figures/runs/<name>`, and refresh that folder's index."""
    import argparse

    from pcnn.datasets.location import DATA_DIR_ENV

    parser = argparse.ArgumentParser(prog="python -m pcnn.runrecord publish", description=main.__doc__)
    parser.add_argument("run", help="the run folder (`pcnn train/finetune --run-dir`)")
    parser.add_argument("dest", help="where its records go, e.g. figures/runs/<name>")
    parser.add_argument("--evaluation", help="a `pcnn evaluate --out` folder of the run's checkpoint")
    parser.add_argument(
        "--sweep", help="a `python -m pcnn.temperature_sweep --out` folder of the run's checkpoint"
    )
    parser.add_argument(
        "--data-dir", help="the data folder the run read (default: PCNN_DATA_DIR), named, not spelled"
    )
    parser.add_argument(
        "--title", help="the README's title where DEST has no README yet (default: DEST's name)"
    )
    args = parser.parse_args(argv)
    data_root = args.data_dir or os.environ.get(DATA_DIR_ENV)  # none: its paths keep their file names only
    try:
        written = publish_run(
            args.run,
            args.dest,
            evaluation=args.evaluation,
            sweep=args.sweep,
            data_root=data_root,
            title=args.title,
        )
    except PublishError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0
