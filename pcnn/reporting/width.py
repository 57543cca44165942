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
and the figure from the folder's record.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pcnn.config import ModelConfig
from pcnn.core.model import build_model
from pcnn.reporting.continuation import row_record, rows_cli, sample_cells
from pcnn.reporting.plots import run_curves_figure, save_figure
from pcnn.reporting.report import fmt_ci, fmt_pct, tex_escape
from pcnn.workflow.runrecord import read_metrics

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
    """A continuation-style row with the network's width, size and validation curve added."""
    model = json.loads((Path(run) / "config.json").read_text())["model"]
    return {
        **row_record(label, run, evaluation, sweep, verdicts),
        "filters": model["nr_filters"],
        "parameters": parameter_count(model),
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
    # one clause per width: two rows of one run (say after 30 and after 60 epochs) share their curve
    first_of_width: dict[int, Mapping[str, Any]] = {}
    for row, point in zip(rows, shared["points"]):
        first_of_width.setdefault(row["filters"], point)
    parts = [
        f"{filters} filters reach {point['bits_per_dim']:.3f} bits/dim and"
        f" {fmt_pct(point['accuracy'])}\\pct{{}} accuracy"
        for filters, point in list(first_of_width.items())[1:]
    ]
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


def write_outputs(record: Mapping[str, Any], out: Path) -> None:
    """The report's paragraph and the curves figure of `record`, into `out`."""
    (out / "width.tex").write_text(width_tex(record, folder=out.name))
    curves = {f"{row['label']} ({row['filters']} filters)": row["curve"] for row in record["rows"]}
    save_figure(run_curves_figure(curves, title="Validation over training, per width"), out / FIGURE)


def _record(rows: list[list[str]], verdicts: Mapping[str, str]) -> dict[str, Any]:
    built = [width_row(*row, verdicts=verdicts.get(row[0])) for row in rows]
    return {"rows": built, "equal_epoch": equal_epoch(built)}


def main(argv: list[str] | None = None) -> int:
    parsed = rows_cli(
        argv,
        name="width",
        description="Write the report's model-width comparison: width.json, width.tex and the curves figure.",
        build=_record,
    )
    if parsed is None:
        return 2
    record, out = parsed
    write_outputs(record, out)
    print(f"wrote {out / 'width.tex'} and {out / FIGURE}.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
