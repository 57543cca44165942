"""The report's comparison of model capacities: the same profile trained with more filters (width) or more
gated resnet blocks per stage (depth), at equal epochs.

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
were judged, say one that tests another learning rate or another depth. `--curve` without `--row`
updates the folder's record: its rows' networks and curves are read again from their run folders and
its curve runs become the given ones.
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
from pcnn.workflow.runrecord import local_path, machine_roots, portable, read_metrics

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
        "resnets": config["model"]["nr_resnet"],
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


def network_name(run: Mapping[str, Any], base_resnets: int | None) -> str:
    """A network by its width, and by its depth where that differs from `base_resnets` (None: always)."""
    blocks = run["resnets"]
    depth = f" and {blocks} resnet block{'s' if blocks != 1 else ''} per stage"
    return f"{run['filters']} filters{'' if blocks == base_resnets else depth}"


def _row_tex(row: Mapping[str, Any], base_resnets: int) -> str:
    ev = row["evaluation"]
    blocks = "" if row["resnets"] == base_resnets else f" ({row['resnets']} blocks)"
    cells = [
        tex_escape(row["label"]),
        f"{row['filters']}{blocks}",
        _millions(row),
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
    base_name = network_name(base, base["resnets"])
    networks = list(_points_by_network(rows, shared["epoch"], base["resnets"]).items())
    parts = [_reach(name, point) for name, point in networks[1:]]
    samples = [
        f"{fmt_pct(row['samples']['overall'])}\\pct{{}}{_fid_clause(row['samples'])} after {row['epochs']}"
        f" epochs with {network_name(row, base['resnets'])}"
        for row in rows[1:]
    ]
    return (
        f"After {shared['epoch']} epochs, {'; '.join(parts)}, where {base_name} reach"
        f" {base_point['bits_per_dim']:.3f} and {fmt_pct(base_point['accuracy'])}\\pct{{}}. Samples judged in"
        f" their class: {'; '.join(samples)}, against {fmt_pct(base['samples']['overall'])}\\pct{{}}"
        f"{_fid_clause(base['samples'])} after {base['epochs']} epochs with {base['filters']}."
    )


def _points_by_network(
    rows: Sequence[Mapping[str, Any]], epoch: int, base_resnets: int
) -> dict[str, Mapping[str, Any]]:
    """Each network's validation point at `epoch`, from the first row of that network that evaluated it:
    two rows of one run (say after 30 and after 60 epochs) share their curve."""
    points: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        point = next((p for p in row["curve"] if p["epoch"] == epoch), None)
        if point is not None:
            points.setdefault(network_name(row, base_resnets), point)
    return points


def _reach(network: str, point: Mapping[str, Any]) -> str:
    return (
        f"{network} reach {point['bits_per_dim']:.3f} bits/dim and"
        f" {fmt_pct(point['accuracy'])}\\pct{{}} accuracy"
    )


def _curve_sentences(curves: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> str:
    """Each curve-only run at its last evaluated epoch, beside the table's runs at that epoch."""
    sentences = []
    base_resnets = rows[0]["resnets"]
    for curve in curves:
        last = curve["curve"][-1]
        others = _points_by_network(rows, last["epoch"], base_resnets)
        beside = f", where {'; '.join(_reach(n, p) for n, p in others.items())}" if others else ""
        network = network_name(curve, base_resnets)
        named = "" if network in curve["label"] else f"{network}, "
        sentences.append(
            f"{tex_escape(curve['label'])} ({named}{_millions(curve)} parameters, learning rate"
            f" {fmt_sci(curve['lr'])}, stopped before its samples were judged) reaches"
            f" {last['bits_per_dim']:.3f} bits/dim and"
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


def _millions(run: Mapping[str, Any]) -> str:
    return f"{run['parameters'] / 1e6:.2f}M"


def _deeper(record: Mapping[str, Any]) -> bool:
    """Whether some run of the record differs from the baseline in depth, not only in width."""
    runs = [*record["rows"], *record.get("curves", [])]
    return any(run["resnets"] != runs[0]["resnets"] for run in runs)


def _fid_clause(samples: Mapping[str, Any]) -> str:
    fid = samples.get("matched_fid")
    return f" (matched FID {fid['model']:.1f})" if fid else ""


def width_tex(record: Mapping[str, Any], folder: str = "width") -> str:
    """A LaTeX paragraph, table and figure of the width `record` (`folder`: its path in the figures)."""
    rows = record["rows"]
    first = rows[0]["samples"]
    body = "\n".join(_row_tex(row, rows[0]["resnets"]) for row in rows)
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
    deeper = _deeper(record)
    title, more = (
        ("Model width and depth", " or more resnet blocks per stage") if deeper else ("Model width", "")
    )
    base = network_name(rows[0], None if deeper else rows[0]["resnets"])
    return rf"""\paragraph{{{title}.}} A network of {base} is small and still
improving after {rows[0]["epochs"]} epochs, so capacity is the lever left to measure on a CPU: the
same schedule with more filters{more} (Table~\ref{{tab:width}}, Figure~\ref{{fig:width}}). The learning rate
decays per epoch, so the runs follow the same schedule over the epochs they share. Accuracy and
bits/dim of the last checkpoints are on the {rows[0]["evaluation"]["n"]} validation images (bootstrap
95\pct{{}} intervals); {first["n"]} samples per model ($T = 1$, no guidance) {_judges(rows)}, and the FID
is the matched protocol's. {_comparison(rows, record.get("equal_epoch"))}
{_curve_sentences(record.get("curves", []), rows)}

\begin{{table}}[htbp]
  \centering\footnotesize\setlength{{\tabcolsep}}{{3pt}}
  \caption{{{title}: the last checkpoint of each run, its classifier and its samples.}}
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
  \caption{{Validation bits/dim and accuracy over training, per network (Polyak-averaged weights).}}
  \label{{fig:width}}
\end{{figure}}
"""


def _legend(run: Mapping[str, Any], base_resnets: int) -> str:
    """A run's label, with its network unless the label already names it."""
    network = network_name(run, base_resnets)
    return run["label"] if network in run["label"] else f"{run['label']} ({network})"


def distinct_trajectories(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The runs without those whose curve starts another's (longer, or equal and later) one: two rows of one
    training run (after 30 and after 60 epochs, even from copies of its folder) would draw one curve over
    the other."""

    def continued(index: int) -> bool:
        curve = runs[index]["curve"]
        return any(
            other["curve"][: len(curve)] == curve and (len(other["curve"]) > len(curve) or later > index)
            for later, other in enumerate(runs)
            if later != index
        )

    return [run for index, run in enumerate(runs) if not continued(index)]


def write_outputs(record: Mapping[str, Any], out: Path) -> None:
    """The report's paragraph and the curves figure of `record`, into `out`."""
    (out / "width.tex").write_text(width_tex(record, folder=out.name))
    runs = [*record["rows"], *record.get("curves", [])]
    curves = {_legend(run, runs[0]["resnets"]): run["curve"] for run in distinct_trajectories(runs)}
    save_figure(run_curves_figure(curves, title="Validation over training, per network"), out / FIGURE)


def _record(rows: list[list[str]], verdicts: Mapping[str, str], curves: list[list[str]]) -> dict[str, Any]:
    built = [width_row(*row, verdicts=verdicts.get(row[0])) for row in rows]
    return _with_curves({"rows": built, "equal_epoch": equal_epoch(built)}, curves)


def _with_curves(record: dict[str, Any], curves: list[list[str]]) -> dict[str, Any]:
    if curves:
        record["curves"] = [curve_run(*curve) for curve in curves]
    return record


def updated_record(record: Mapping[str, Any], curves: list[list[str]]) -> dict[str, Any]:
    """`record` with its rows' networks and curves read again from their run folders (the judged samples
    and evaluations stay) and `curves` as its curve runs: a run added without rebuilding every row."""
    roots = machine_roots(checkout=Path.cwd())
    rows = [{**row, **curve_run(row["label"], local_path(row["run"], roots))} for row in record["rows"]]
    return _with_curves({**record, "rows": rows, "equal_epoch": equal_epoch(rows)}, curves)


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--curve",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "RUN"),
        help="a run shown by its validation curve alone (in the figure and the paragraph, not the table):"
        " one stopped before its samples were judged (repeatable); without --row, the record's curve runs"
        " become these and its rows are read again from their run folders",
    )
    curves = options.parse_known_args(argv)[0].curve
    parsed = rows_cli(
        argv,
        name="width",
        description="Write the report's comparison of model widths and depths: width.json, width.tex and the"
        " curves figure.",
        build=lambda rows, verdicts: _record(rows, verdicts, curves),
        parents=[options],
        update=lambda record: updated_record(record, curves) if curves else None,
    )
    if parsed is None:
        return 2
    record, out = parsed
    write_outputs(record, out)
    print(f"wrote {out / 'width.tex'} and {out / FIGURE}.pdf")
    return 0


if __name__ == "__main__":
    sys.exit(main())
