"""The notebook pipeline: run the six notebooks headless in order, then build the report.

`pcnn pipeline --profile smoke` (also `python -m pcnn.pipeline`) executes `notebooks/NN_name.py`
(jupytext percent format, the reviewed source) with papermill into `build/<profile>/notebooks/`, passing
each the same parameters, and compiles `report/main.tex` with latexmk into `build/<profile>/report.pdf`:

    build/<profile>/notebooks/  executed notebooks (.ipynb, with their outputs)
    build/<profile>/runs/       training runs and results/ (the JSON every figure and number comes from)
    build/<profile>/figures/    figures (PDF + PNG), LaTeX tables, macros.tex, results.json, manifest.json
    build/<profile>/report.pdf  the report

The first failing cell stops the pipeline with the notebook and the cell named. The committed figures in
`figures/` (the reference run: the `cpu` profile on the course data) are written only by `--publish`.

Every stage's size (evaluation images, samples, FID counts, ablation budget...) comes from `stage_sizes`,
one set per profile, defined beside the profile in `pcnn.config` (docs/design.md#profiles) and re-exported
here, with overrides for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pcnn.config import PROFILES, StageSizes, stage_sizes
from pcnn.workflow.publish import RUN_RECORD_FILES, copy_record
from pcnn.workflow.results import Record, as_json, validate_record

R = TypeVar("R", bound=Record)

REPO_MARKERS = ("pyproject.toml", "notebooks", "report")
REFERENCE_CHECKPOINT = Path("checkpoints") / "reference.pt"
FIGURE_FORMATS = ("pdf", "png")


@dataclass(frozen=True)
class Notebook:
    """One notebook of the pipeline and the figure stems it must write into the figures folder."""

    name: str
    figures: tuple[str, ...]
    files: tuple[str, ...] = ()  # other files it must write into the figures folder


# The figures the report includes: notebook 05 writes each of them (`pcnn.reporting.report` reads this).
REPORT_FIGURES: tuple[str, ...] = (
    "training_curves",
    "samples_per_class",
    "confusion_matrix",
    "reliability",
    "accuracy_vs_fraction",
    "fid_floor",
    "ablation",
    "finetune_comparison",
    "data_examples",
    "sampler_speed",
    "nearest_neighbours",
    "completions",
    "samples_temperatures",
    "real_vs_generated",
    "samples_over_training",
    "judge_per_class",
)

NOTEBOOKS: tuple[Notebook, ...] = (
    Notebook(
        "00_data_exploration",
        ("data_class_balance", "data_examples", "data_pixel_histograms", "data_grayscale"),
    ),
    Notebook(
        "01_training",
        ("training_curves", "confusion_matrix", "reliability", "accuracy_vs_fraction", "per_class_bpd"),
    ),
    Notebook("02_finetuning", ("finetune_comparison", "finetune_curves")),
    Notebook("03_ablations", ("ablation",)),
    Notebook(
        "04_sampling_and_fid",
        (
            "samples_per_class",
            "fid_floor",
            "sampler_speed",
            "nearest_neighbours",
            "samples_temperatures",
            "completions",
            "samples_over_training",
            "judge_per_class",
            "real_vs_generated",
        ),
    ),
    Notebook(
        "05_report_figures",
        REPORT_FIGURES,
        (
            "macros.tex",
            "table_ablation.tex",
            "table_hyperparameters.tex",
            "table_fid.tex",
            "table_classification.tex",
            "table_finetune.tex",
            "table_checks.tex",
            "table_original.tex",
            "results.json",
            "manifest.json",
        ),
    ),
)


# ------------------------------------------------------------------------------------------------ paths


def repo_root(start: str | Path | None = None) -> Path | None:
    """The checkout holding the notebooks and the report (searched upwards), or None outside one."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in REPO_MARKERS):
            return folder
    package_parent = Path(__file__).resolve().parents[2]
    if all((package_parent / marker).exists() for marker in REPO_MARKERS):
        return package_parent
    return None


@dataclass(frozen=True)
class Paths:
    """Where a notebook reads and writes: the run folder, its results, and the figures folder."""

    build: Path
    runs: Path
    results: Path
    figures: Path

    def mkdirs(self) -> Paths:
        for folder in (self.runs, self.results, self.figures):
            folder.mkdir(parents=True, exist_ok=True)
        return self


def resolve_paths(
    profile: str, run_dir: str | Path | None = None, figures_dir: str | Path | None = None
) -> Paths:
    """Defaults `build/<profile>/runs` and `build/<profile>/figures`, under the checkout when there is one
    (a notebook opened in `notebooks/` writes to the same place as the pipeline), else the working folder."""
    base = (repo_root() or Path.cwd()) / "build" / profile
    runs = Path(run_dir).expanduser().resolve() if run_dir else base / "runs"
    figures = Path(figures_dir).expanduser().resolve() if figures_dir else base / "figures"
    return Paths(build=runs.parent, runs=runs, results=runs / "results", figures=figures).mkdirs()


def reference_checkpoint() -> Path | None:
    """The committed reference checkpoint (the `cpu` profile on the course data), when this clone has it."""
    root = repo_root()
    path = (root / REFERENCE_CHECKPOINT) if root else None
    return path if path is not None and path.is_file() else None


def write_result(paths: Paths, name: str, data: Any) -> Path:
    """Write one notebook's results as `results/<name>.json` (the single source of the report's numbers).

    `data` is its record (`pcnn.workflow.results`) or the record's JSON; either is validated first, so a
    notebook that leaves out a field the report needs fails here, not in notebook 05.
    """
    if isinstance(data, Record) and data.NAME != name:
        raise ValueError(f"a {type(data).__name__} is the '{data.NAME}' record, not '{name}'")
    data = validate_record(name, as_json(data))
    path = paths.results / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def read_result(paths: Paths, name: str) -> Any:
    """One notebook's results, validated against its record; a clear error names the notebook to run
    first when they are missing."""
    path = paths.results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the notebook that writes '{name}' first")
    return validate_record(name, json.loads(path.read_text()))


def read_record(paths: Paths, record: type[R]) -> R:
    """One notebook's results as its record dataclass (`pcnn.workflow.results`), e.g. `TrainingRecord`."""
    return record.from_dict(read_result(paths, record.NAME))


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def figure_files(stem: str) -> list[str]:
    """The files a figure stem stands for."""
    return [f"{stem}.{ext}" for ext in FIGURE_FORMATS]


def missing_outputs(notebook: Notebook, figures_dir: str | Path) -> list[str]:
    """Declared outputs of a notebook that are not in the figures folder."""
    folder = Path(figures_dir)
    expected = [name for stem in notebook.figures for name in figure_files(stem)] + list(notebook.files)
    return [name for name in expected if not (folder / name).is_file()]


# ------------------------------------------------------------------------------------------ notebooks


@dataclass
class NotebookContext:
    """What every notebook resolves from its parameters: paths, sizes, device, data and the run config."""

    profile: str
    paths: Paths
    sizes: StageSizes
    device: Any  # torch.device
    data_root: Path
    data_source: str
    seed: int
    config: Any  # RunConfig

    @property
    def meta(self) -> dict[str, Any]:
        """Provenance that the report prints: profile, data source, device, seed.

        The data folder is named by `pcnn.workflow.runrecord.data_label`, not by its path: this goes into the
        committed `results.json` and `manifest.json`.
        """
        from pcnn.workflow.runrecord import data_label

        return {
            "profile": self.profile,
            "data_source": self.data_source,
            "data_dir": data_label(self.data_root),
            "device": str(self.device),
            "seed": self.seed,
        }

    @property
    def record_roots(self) -> dict[str, str]:
        """Folders that `pcnn.workflow.runrecord.portable` names in the figures folder's records: `<build>`
        (this profile's build folder), `<checkout>`, the data folder and `~`."""
        from pcnn.workflow.runrecord import machine_roots

        return machine_roots(self.data_root, build=self.paths.build, checkout=repo_root())

    def seeds(self, offsets: list[int]) -> list[int]:
        """Sampling seeds: the notebook seed plus each offset (so one `seed` parameter moves them all)."""
        return [self.seed + int(offset) for offset in offsets]

    @property
    def ablation_config(self) -> Any:
        """The run config the ablation varies: this profile with the stage sizes' `ablation_overrides`."""
        from pcnn.config import apply_overrides

        return apply_overrides(self.config, list(self.sizes.ablation_overrides))


def describe_device(device: Any) -> str:
    """The device with its GPU's name, so that a notebook's output says what it ran on."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def notebook_context(
    profile: str = "smoke",
    *,
    data_dir: str | None = None,
    run_dir: str | None = None,
    figures_dir: str | None = None,
    seed: int | None = None,
    device: str = "auto",
    sizes: dict[str, Any] | None = None,
) -> NotebookContext:
    """Resolve a notebook's parameters (the same in all six) and print what it will use.

    `seed` None keeps the profile's training seed; a number overrides it and offsets the sampling seeds.
    """
    from pcnn.config import apply_overrides
    from pcnn.config import profile as load_profile
    from pcnn.datasets import resolve_data_dir
    from pcnn.training.device import resolve_device
    from pcnn.training.engine import describe_precision
    from pcnn.workflow.colab import on_colab
    from pcnn.workflow.experiments import data_source

    chosen = stage_sizes(profile, sizes)
    overrides = list(chosen.train_overrides) + ([f"train.seed={int(seed)}"] if seed is not None else [])
    config = apply_overrides(load_profile(profile), overrides)
    dev = resolve_device(device)
    root = resolve_data_dir(data_dir)
    paths = resolve_paths(profile, run_dir, figures_dir)
    ctx = NotebookContext(
        profile=profile,
        paths=paths,
        sizes=chosen,
        device=dev,
        data_root=root,
        data_source=data_source(root),
        seed=int(seed) if seed is not None else 0,
        config=config,
    )
    print(f"profile {profile} | data {root} ({ctx.data_source})")
    print(f"runs {paths.runs} | figures {paths.figures}")
    print(f"device {describe_device(dev)} | training precision {describe_precision(config.train, dev)}")
    if on_colab() and dev.type != "cuda":
        print("note: no GPU in this Colab runtime (Runtime > Change runtime type > GPU); running on the CPU")
    if ctx.data_source == "synthetic":
        print("note: synthetic data: the numbers below exercise the pipeline and are not meaningful")
    return ctx


# ---------------------------------------------------------------------------------------------- running


class PipelineError(RuntimeError):
    """A notebook failed (the message names it and the cell) or a stage could not run."""


def notebook_parameters(
    profile: str,
    paths: Paths,
    *,
    data_dir: str | None,
    seed: int | None,
    device: str,
    sizes: dict[str, Any] | None,
) -> dict[str, Any]:
    """The parameters every notebook receives (its `parameters` cell declares the same names)."""
    return {
        "profile": profile,
        "data_dir": data_dir,
        "run_dir": str(paths.runs),
        "figures_dir": str(paths.figures),
        "seed": seed,
        "device": device,
        "sizes": sizes or {},
    }


def load_notebook(source: Path) -> Any:
    """Read a jupytext percent-format `.py` notebook as an nbformat notebook with a Python kernel."""
    import jupytext

    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    return nb


def _check_kernel() -> None:
    """Warn when the `python3` kernel would not run this interpreter (it would miss the package)."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    except Exception as exc:  # noqa: BLE001 - only a diagnostic
        print(f"warning: cannot inspect the python3 kernel ({exc})", file=sys.stderr)
        return
    if (
        argv0 not in ("python", "python3", "{python}")
        and Path(argv0).resolve() != Path(sys.executable).resolve()
    ):
        print(
            f"warning: the python3 Jupyter kernel runs {argv0}, not {sys.executable}; notebooks may not "
            f"find pcnn (install ipykernel into this environment)",
            file=sys.stderr,
        )


def execute_notebook(
    notebook: Notebook,
    parameters: dict[str, Any],
    out_dir: Path,
    *,
    notebooks_dir: Path,
    log_output: bool = False,
    timeout_s: int | None = None,
) -> Path:
    """Run one notebook with papermill; on failure raise PipelineError naming the notebook and the cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebooks_dir / f"{notebook.name}.py"
    if not source.is_file():
        raise PipelineError(f"notebook source {source} is missing")
    output = out_dir / f"{notebook.name}.ipynb"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            load_notebook(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            cwd=str(notebooks_dir),
            log_output=log_output,
            progress_bar=False,
            execution_timeout=timeout_s,
        )
    except PapermillExecutionError as exc:
        raise PipelineError(
            f"notebook {notebook.name} failed in cell {exc.cell_index} (execution count {exc.exec_count}): "
            f"{exc.ename}: {exc.evalue}\n  executed notebook with the traceback: {output}\n  source: {source}"
        ) from None
    missing = missing_outputs(notebook, parameters["figures_dir"])
    if missing:
        raise PipelineError(
            f"notebook {notebook.name} ran but did not write {', '.join(missing)} into "
            f"{parameters['figures_dir']}"
        )
    return output


def run_pipeline(
    profile: str = "smoke",
    *,
    data_dir: str | None = None,
    build_dir: str | Path | None = None,
    seed: int | None = None,
    device: str = "auto",
    sizes: dict[str, Any] | None = None,
    only: list[str] | None = None,
    report: bool = True,
    log_output: bool = False,
    timeout_s: int | None = None,
) -> dict[str, Any]:
    """Run the notebooks (all, or those whose name starts with one of `only`) and build the report.

    Returns the paths and the seconds each stage took.
    """
    root = repo_root()
    if root is None:
        raise PipelineError("the pipeline runs from a checkout (notebooks/ and report/ not found)")
    build = Path(build_dir).resolve() / profile if build_dir else root / "build" / profile
    paths = resolve_paths(profile, build / "runs", build / "figures")
    data_dir = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    stage_sizes(profile, sizes)  # fail early on a bad override
    parameters = notebook_parameters(profile, paths, data_dir=data_dir, seed=seed, device=device, sizes=sizes)
    chosen = [nb for nb in NOTEBOOKS if not only or any(nb.name.startswith(prefix) for prefix in only)]
    if not chosen:
        raise PipelineError(
            f"no notebook matches {only}; notebooks: {', '.join(nb.name for nb in NOTEBOOKS)}"
        )
    if report:
        from pcnn.reporting.report import install_hint, latexmk_available

        if not latexmk_available():
            raise PipelineError(
                f"latexmk/pdflatex not found (needed for the report): {install_hint()}; "
                "or skip the report with --no-report"
            )
    _check_kernel()
    # OpenMP threads that spin while waiting slow torch down several-fold on a shared (oversubscribed)
    # CPU; passive waiting costs little when the machine is idle. The kernels inherit this environment.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    timings: dict[str, float] = {}
    started = time.time()
    for notebook in chosen:
        print(f"[pipeline] {profile}: running {notebook.name} ...", flush=True)
        tick = time.monotonic()
        execute_notebook(
            notebook,
            parameters,
            build / "notebooks",
            notebooks_dir=root / "notebooks",
            log_output=log_output,
            timeout_s=timeout_s,
        )
        timings[notebook.name] = time.monotonic() - tick
        print(f"[pipeline] {notebook.name} done in {timings[notebook.name]:.0f} s", flush=True)
    pdf = None
    if report:
        from pcnn.reporting.report import build_report

        tick = time.monotonic()
        print("[pipeline] building the report with latexmk ...", flush=True)
        pdf = build_report(paths.figures, build / "report.pdf", report_dir=root / "report")
        timings["report"] = time.monotonic() - tick
        print(f"[pipeline] report: {pdf}", flush=True)
    summary = {
        "profile": profile,
        "build": str(build),
        "figures": str(paths.figures),
        "report": str(pdf) if pdf else None,
        "seconds": timings,
        "started": started,
        "total_s": time.time() - started,
    }
    (build / "pipeline.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def publish(profile: str, build_dir: str | Path | None = None, target: str | Path | None = None) -> Path:
    """Copy a build's figures folder to the committed `figures/` (the reference run's figures).

    Beside the figures go the records a reviewer needs to check them: the main training run's config,
    provenance, metrics and loss log (`reference_run/`) and the ablation rows (`ablation.json`). JSON
    records are copied `portable` (`pcnn.workflow.runrecord`): committed files name no folder of this machine.
    """
    from pcnn.workflow.runrecord import machine_roots

    root = repo_root()
    if root is None:
        raise PipelineError("publish runs from a checkout")
    build = Path(build_dir).resolve() / profile if build_dir else root / "build" / profile
    source = build / "figures"
    if not (source / "manifest.json").is_file():
        raise PipelineError(f"{source} holds no finished build (no manifest.json); run the pipeline first")
    dest = Path(target) if target else root / "figures"
    dest.mkdir(parents=True, exist_ok=True)
    roots = machine_roots(build=build, checkout=root)
    for path in source.iterdir():
        if path.is_file():  # as written: notebook 05 writes them portable, and the manifest hashes them
            shutil.copy2(path, dest / path.name)
    run_record = dest / "reference_run"
    for name in RUN_RECORD_FILES:
        path = build / "runs" / "main" / name
        if path.is_file():
            run_record.mkdir(exist_ok=True)
            copy_record(path, run_record / name, roots)
    ablation = build / "runs" / "ablation" / "ablation.json"
    if ablation.is_file():
        copy_record(ablation, dest / "ablation.json", roots)
    return dest


# -------------------------------------------------------------------------------------------------- CLI


def _parse_sizes(items: list[str]) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--size expects name=value (a JSON value), got {item!r}")
        try:
            sizes[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            sizes[key.strip()] = value
    return sizes


def run_pipeline_command(args: argparse.Namespace) -> int:
    """Handler of `pcnn pipeline`; exit 0, 1 when a notebook or the report failed."""
    from pcnn.reporting.report import ReportError

    try:
        sizes = _parse_sizes(args.size or [])
        if args.publish_only:
            print(f"published to {publish(args.profile, args.build_dir)}")
            return 0
        summary = run_pipeline(
            args.profile,
            data_dir=args.data_dir,
            build_dir=args.build_dir,
            seed=args.seed,
            device=args.device,
            sizes=sizes,
            only=args.only,
            report=not args.no_report,
            log_output=args.log_output,
        )
        if args.publish:
            print(f"published to {publish(args.profile, args.build_dir)}")
    except (PipelineError, ReportError, ValueError, argparse.ArgumentTypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary["seconds"], indent=2))
    print(f"total {summary['total_s']:.0f} s; report: {summary['report']}")
    return 0


def add_pipeline_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `pcnn pipeline` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "pipeline",
        help="run the six notebooks headless (papermill) and build the report into build/<profile>/",
        description=(
            "Execute notebooks/00..05 in order with papermill on a profile, writing executed notebooks, "
            "runs, figures and tables under build/<profile>/, then compile report/main.tex with latexmk into "
            "build/<profile>/report.pdf. Data: --data-dir, else $PCNN_DATA_DIR, else the synthetic set. A "
            "failing cell stops the pipeline and names the notebook and the cell. Runs resume: a finished "
            "training run is loaded, not retrained."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_pipeline_command)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile", default="smoke", choices=sorted(PROFILES), help="profile (default smoke)"
    )
    parser.add_argument("--data-dir", default=None, help="data root (default: $PCNN_DATA_DIR or synthetic)")
    parser.add_argument("--build-dir", default=None, help="build root (default: <checkout>/build)")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training seed (default: the profile's) and offset of the sampling seeds (default 0)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, mps (default auto)")
    parser.add_argument(
        "--only", nargs="+", metavar="NN", help="run only these notebooks (name prefixes: 00 01)"
    )
    parser.add_argument(
        "--size",
        action="append",
        metavar="NAME=VALUE",
        help="override a stage size (JSON value), e.g. --size eval_subset=32; repeatable",
    )
    parser.add_argument("--no-report", action="store_true", help="skip latexmk")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' output")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="afterwards copy build/<profile>/figures to figures/ (the committed reference)",
    )
    parser.add_argument("--publish-only", action="store_true", help="only copy an earlier build's figures")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pcnn.pipeline", description="Run the notebook pipeline.")
    _add_arguments(parser)
    return run_pipeline_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
