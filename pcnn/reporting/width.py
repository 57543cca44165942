"""The report's comparison of model widths: the same profile trained with more filters, at equal epochs.

The 40-filter `long` model is small and underfits: its validation bits/dim are still falling at 80 epochs
and its samples carry colour and texture but no object. Width is the capacity lever a CPU can measure. A
wider run is compared where the comparison is fair, at the epochs both runs have evaluated (the `long`
and `wide` profiles' learning rate decays per epoch, so the first E epochs follow the same schedule
whatever the run's total), and its samples are judged like the reference's. Each row names a run folder
(`config.json`, `metrics.jsonl`), the `pcnn evaluate` JSON of its last checkpoint on the validation split
and a `python -m pcnn.temperature_sweep` folder (`sweep.json`, setting `1.0`), as in
`pcnn.reporting.continuation`. `python -m pcnn.reporting.width --out DIR --row ...` writes `width.json`,
`width.tex` (what the report prints) and `width_curves.pdf/.png`; without `--row` it rewrites the `.tex`
and the figure from the folder's record. `--curve LABEL RUN` adds a run by its validation curve alone
(the figure and a sentence beside the table's runs at its last epoch): a run stopped before its samples
were judged, say one that tests another learning rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcnn.config import ModelConfig
from pcnn.core.model import build_model
from pcnn.reporting.continuation import row_record, rows_cli, sample_cells
from pcnn.reporting.plots import run_curves_figure, save_figure
from pcnn.reporting.report import fmt_ci, fmt_pct, fmt_sci, tex_escape
from pcnn.workflow.runrecord import machine_roots, portable, read_metrics

FIGURE = "width_curves"


def parameter_count(model: Mapping[str, Any]) -> int:
    """Trainable parameters of the network a run's `config.json` "model" section describes."""
    network = build_model(ModelConfig(**model))
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def validation_curve(run: str | Path) -> list[dict[str, float]]:
    """(epoch, validation bits/dim, validation accuracy) of every evaluation in a run's metrics.jsonl."""
    return [
        {"epoch": m["epoch"], "bits_per_dim": m["val_bits_per_dim"], "accuracy": m["val_accuracy"]}
        for m in read_metrics(run)
        if "val_bits_per_dim" in m and "val_accuracy" in m
    ]


def width_row(
    label: str, run: str | Path, evaluation: str | Path, sweep: str | Path, verdicts: str | Path | None = None
) -> dict[str, Any]:
    """A continuation-style row with the network's width, size, learning rate and validation curve added."""
    return {**row_record(label, run, evaluation, sweep, verdicts), **curve_run(label, run)}


def curve_run(label: str, run: str | Path) -> dict[str, Any]:
    """A run shown by its validation curve alone: one stopped before its last checkpoint was judged (its
    learning rate is named, since such a run may also test another one)."""
    config = json.loads((Path(run) / "config.json").read_text())
    return {
        "label": label,
        "run": portable(str(run), machine_roots(checkout=Path.cwd())),
        "filters": config["model"]["nr_filters"],
        "parameters": parameter_count(config["model"]),
        "lr": config["train"]["lr"],
        "curve": validation_curve(run),
    }


def equal_epoch(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Every row's validation point at the last epoch that all rows evaluated (None when they share none)."""
    shared = set.intersection(*({p["epoch"] for p in row["curve"]} for row in rows)) if rows else set()
    if not shared:
        return None
    epoch = max(shared)
    return {
        "epoch": epoch,
        "points": [next(p for p in row["curve"] if p["epoch"] == epoch) for row in rows],
    }


def _row_tex(row: Mapping[str, Any]) -> str:
    ev = row["evaluation"]
    cells = [
        tex_escape(row["label"]),
        str(row["filters"]),
        f"{row['parameters'] / 1e6:.2f}M",
        str(row["epochs"]),
        f"{fmt_pct(ev['accuracy'])} {fmt_ci(ev['accuracy_ci95'])}",
        f"{ev['bits_per_dim']:.3f}",
        *sample_cells(row["samples"]),
        fmt_pct(row["samples"]["judge_accuracy"]),
    ]
    return "    " + " & ".join(cells) + r" \\"


def _comparison(rows: Sequence[Mapping[str, Any]], shared: Mapping[str, Any] | None) -> str:
    """The wider rows against the first, at equal epochs (curves) and at their last checkpoints (samples)."""
    if shared is None or len(rows) < 2:
        return ""
    base, base_point = rows[0], shared["points"][0]
    widths = list(_points_by_width(rows, shared["epoch"]).items())
    parts = [_reach(filters, point) for filters, point in widths[1:]]
    samples = [
        f"{fmt_pct(row['samples']['overall'])}\\pct{{}}{_fid_clause(row['samples'])} after {row['epochs']}"
        f" epochs with {row['filters']} filters"
        for row in rows[1:]
    ]
    return (
        f"After {shared['epoch']} epochs, {'; '.join(parts)}, where {base['filters']} filters reach"
        f" {base_point['bits_per_dim']:.3f} and {fmt_pct(base_point['accuracy'])}\\pct{{}}. Samples judged in"
        f" their class: {'; '.join(samples)}, against {fmt_pct(base['samples']['overall'])}\\pct{{}}"
        f"{_fid_clause(base['samples'])} after {base['epochs']} epochs with {base['filters']}."
    )


def _points_by_width(rows: Sequence[Mapping[str, Any]], epoch: int) -> dict[int, Mapping[str, Any]]:
    """Each width's validation point at `epoch`, from the first row of that width that evaluated it: two
    rows of one run (say after 30 and after 60 epochs) share their curve."""
    points: dict[int, Mapping[str, Any]] = {}
    for row in rows:
        point = next((p for p in row["curve"] if p["epoch"] == epoch), None)
        if point is not None:
            points.setdefault(row["filters"], point)
    return points


def _reach(filters: int, point: Mapping[str, Any]) -> str:
    return (
        f"{filters} filters reach {point['bits_per_dim']:.3f} bits/dim and"
        f" {fmt_pct(point['accuracy'])}\\pct{{}} accuracy"
    )


def _curve_sentences(curves: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """Each curve-only run at its last evaluated epoch, beside the table's runs at that epoch."""
    sentences = []
    for curve in curves:
        last = curve["curve"][-1]
        others = _points_by_width(rows, last["epoch"])
        beside = f", where {'; '.join(_reach(f, p) for f, p in others.items())}" if others else ""
        sentences.append(
            f"{tex_escape(curve['label'])} (learning rate {fmt_sci(curve['lr'])}, stopped before its samples"
            f" were judged) reaches {last['bits_per_dim']:.3f} bits/dim and"
            f" {fmt_pct(last['accuracy'])}\\pct{{}} accuracy after {last['epoch']} epochs{beside}."
        )
    return " ".join(sentences)


def _judges(rows: Sequence[Mapping[str, Any]]) -> str:
    """Which judge judged the rows: a judge retrained on another machine is another judge (its verdicts on
    the very same samples differ by about a point), so the sentence says when the rows do not share one."""
    accuracies = list(dict.fromkeys(fmt_pct(row["samples"]["judge_accuracy"]) for row in rows))
    if len(accuracies) == 1:
        return f"are judged by the same baseline CNN ({accuracies[0]}\\pct{{}} on validation)"
    return (
        "are judged by baseline CNNs of one recipe and seed trained on different machines"
        f" ({', '.join(accuracies)}\\pct{{}} on validation, the judge column): judged shares compare fully"
        " only between rows of one judge"
    )


def _fid_clause(samples: Mapping[str, Any]) -> str:
    fid = samples.get("matched_fid")
    return f" (matched FID {fid['model']:.1f})" if fid else ""


def width_tex(record: Mapping[str, Any], folder: str = "width") -> str:
    """A LaTeX paragraph, table and figure of the width `record` (`folder`: its path in the figures)."""
    rows = record["rows"]
    first = rows[0]["samples"]
    body = "\n".join(_row_tex(row) for row in rows)
    header = " & ".join(
        [
            "model",
            "filters",
            "parameters",
            "epochs",
            r"accuracy \% [95\% CI]",
            "bits/dim",
            r"judged in class \% [95\% CI]",
            "weakest class \\%",
            "FID (floor)",
            "judge \\%",
        ]
    )
    return rf"""\paragraph{{Model width.}} A network of {rows[0]["filters"]} filters is small and still
improving after {rows[0]["epochs"]} epochs, so capacity is the lever left to measure on a CPU: the
same schedule with more filters (Table~\ref{{tab:width}}, Figure~\ref{{fig:width}}). The learning rate
decays per epoch, so the runs follow the same schedule over the epochs they share. Accuracy and
bits/dim of the last checkpoints are on the {rows[0]["evaluation"]["n"]} validation images (bootstrap
95\pct{{}} intervals); {first["n"]} samples per model ($T = 1$, no guidance) {_judges(rows)}, and the FID
is the matched protocol's. {_comparison(rows, record.get("equal_epoch"))}
{_curve_sentences(record.get("curves", []), rows)}

\begin{{table}}[htbp]
  \centering\footnotesize\setlength{{\tabcolsep}}{{3pt}}
  \caption{{Model width: the last checkpoint of each run, its classifier and its samples.}}
  \label{{tab:width}}
  \resizebox{{\linewidth}}{{!}}{{\begin{{tabular}}{{lrrrrrrrrr}}
    \hline
    {header} \\
    \hline
{body}
    \hline
  \end{{tabular}}}}
\end{{table}}

\begin{{figure}}[htbp]
  \centering
  \includegraphics[width=\linewidth]{{{folder}/{FIGURE}.pdf}}
  \caption{{Validation bits/dim and accuracy over training, per width (Polyak-averaged weights).}}
  \label{{fig:width}}
\end{{figure}}
"""


def _legend(run: Mapping[str, Any]) -> str:
    """A run's label, with its width unless the label already names it."""
    width = f"{run['filters']} filters"
    return run["label"] if width in run["label"] else f"{run['label']} ({width})"


def write_outputs(record: Mapping[str, Any], out: Path) -> None:
    """The report's paragraph and the curves figure of `record`, into `out`."""
    (out / "width.tex").write_text(width_tex(record, folder=out.name))
    runs = [*record["rows"], *record.get("curves", [])]
    curves = {_legend(run): run["curve"] for run in runs}
    save_figure(run_curves_figure(curves, title="Validation over training, per width"), out / FIGURE)


def _record(rows: list[list[str]], verdicts: Mapping[str, str], curves: list[list[str]]) -> dict[str, Any]:
    built = [width_row(*row, verdicts=verdicts.get(row[0])) for row in rows]
    record = {"rows": built, "equal_epoch": equal_epoch(built)}
    if curves:
        record["curves"] = [curve_run(*curve) for curve in curves]
    return record


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--curve",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "RUN"),
        help="a run shown by its validation curve alone (in the figure and the paragraph, not the table):"
        " one stopped before its samples were judged (repeatable)",
    )
    curves = options.parse_known_args(argv)[0].curve
    parsed = rows_cli(
        argv,
        name="width",
        description="Write the report's model-width comparison: width.json, width.tex and the curves figure.",
        build=lambda rows, verdicts: _record(rows, verdicts, curves),
        parents=[options],
    )
    if parsed is None:
        return 2
    record, out = parsed
    write_outputs(record, out)
    print(f"wrote {out / 'width.tex'} and {out / FIGURE}.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
