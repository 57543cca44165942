"""The report's table of continued training: one checkpoint (the first row) trained further under different
objectives, each row with its classifier (validation) and its samples (judged, FID) side by side.

The hybrid term trades bits/dim for accuracy, and the course asks for a generative classifier, so a
hybrid row only means something beside its control: the same checkpoint, the same epochs, the likelihood
alone. Each row names a run folder (`config.json`, `metrics.jsonl`), the `pcnn evaluate` JSON of its
last checkpoint on the validation split, and a `python -m pcnn.temperature_sweep` folder of its samples
(`sweep.json`, setting `1.0`). `python -m pcnn.reporting.continuation --out DIR --row ...` writes
`continuation.json` (the numbers) and `continuation.tex` (what the report prints); without `--row` it
writes the `.tex` again from the folder's record.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pcnn.evaluation.paired import compare_sweeps
from pcnn.reporting.report import fmt_ci, fmt_p, fmt_pct, tex_escape
from pcnn.workflow.runrecord import machine_roots, portable, read_metrics

EVALUATION_KEYS = ("n", "accuracy", "accuracy_ci95", "macro_f1", "bits_per_dim")
SAMPLE_SETTING = "1.0"  # the model's own distribution: temperature 1, no guidance


def _objective(config: Mapping[str, Any]) -> str:
    """The training objective of a run's config, with the dropout rate where the run used dropout."""
    train = config["train"]
    weight = train.get("disc_weight") or 0.0
    warmup = train.get("disc_warmup_epochs") or 0
    objective = (
        "likelihood"
        if weight <= 0
        else f"hybrid {weight:g}" + (f", warm-up {warmup:g} ep." if warmup else "")
    )
    dropout = config.get("model", {}).get("dropout") or 0.0
    return objective + (f", dropout {dropout:g}" if dropout else "")


def _verdict_sweep(sweep: Path, judged: Mapping[str, Any], verdicts: Path | None) -> Path | None:
    """The sweep.json that holds each of a row's samples' verdicts: `verdicts` when given, a sweep of the
    very same samples re-drawn to record them (same seed, sampler and judge), which must reproduce the
    row's shares exactly; else the row's own when it recorded them; None when neither has them."""
    if verdicts is None:
        return sweep / "sweep.json" if "judge_predictions" in judged["temperatures"][SAMPLE_SETTING] else None
    redrawn = json.loads((verdicts / "sweep.json").read_text())["temperatures"][SAMPLE_SETTING]
    setting = judged["temperatures"][SAMPLE_SETTING]
    if "judge_predictions" not in redrawn or any(redrawn[k] != setting[k] for k in ("overall", "per_class")):
        raise ValueError(
            f"{verdicts} does not hold the verdicts of {sweep}'s samples: its shares differ or it has no"
            " judge_predictions"
        )
    return verdicts / "sweep.json"


def row_record(
    label: str, run: str | Path, evaluation: str | Path, sweep: str | Path, verdicts: str | Path | None = None
) -> dict[str, Any]:
    """One row's numbers, read from the run's own records, its evaluation JSON and its sweep (`verdicts`:
    a re-drawn sweep of the same samples with per-sample verdicts, for a sweep recorded without them)."""
    run = Path(run)
    config = json.loads((run / "config.json").read_text())
    measured = json.loads(Path(evaluation).read_text())
    # the evaluated checkpoint's position; evaluations written before `pcnn evaluate` recorded it measured
    # the run's last checkpoint
    position = measured.get("checkpoint") or {}
    last = position if position.get("epoch") is not None else (read_metrics(run) or [{}])[-1]
    judged = json.loads((Path(sweep) / "sweep.json").read_text())
    setting = judged["temperatures"][SAMPLE_SETTING]
    verdict_sweep = _verdict_sweep(Path(sweep), judged, Path(verdicts) if verdicts else None)
    roots = machine_roots(checkout=Path.cwd())
    return {
        "label": label,
        "run": portable(str(run), roots),
        "objective": _objective(config),
        "epochs": last.get("epoch"),
        "steps": last.get("step"),
        "evaluation": {k: measured.get(k) for k in EVALUATION_KEYS},
        "samples": {
            "n": setting["n"],
            "judge_accuracy": judged["judge"]["accuracy"],
            "overall": setting["overall"],
            "overall_ci95": setting["overall_ci95"],
            "per_class": setting["per_class"],
            "own_classifier": (setting.get("own_classifier") or {}).get("overall"),
            "matched_fid": setting.get("matched_fid"),
            "verdicts": portable(str(verdict_sweep), roots) if verdict_sweep else None,
        },
    }


def sample_cells(samples: Mapping[str, Any]) -> list[str]:
    """Table cells of a row's samples: judged in class with its interval, the weakest class, the FID."""
    weakest = min(samples["per_class"], key=samples["per_class"].get)
    fid = samples.get("matched_fid")
    return [
        f"{fmt_pct(samples['overall'])} {fmt_ci(samples['overall_ci95'])}",
        f"{tex_escape(weakest)} {fmt_pct(samples['per_class'][weakest])}",
        f"{fid['model']:.1f} ({fid['floor']:.1f})" if fid else "--",
    ]


def _row_tex(row: Mapping[str, Any]) -> str:
    ev = row["evaluation"]
    cells = [
        tex_escape(row["label"]),
        tex_escape(row["objective"]),
        str(row["epochs"]),
        f"{fmt_pct(ev['accuracy'])} {fmt_ci(ev['accuracy_ci95'])}",
        f"{ev['macro_f1']:.3f}",
        f"{ev['bits_per_dim']:.3f}",
        *sample_cells(row["samples"]),
    ]
    return "    " + " & ".join(cells) + r" \\"


def _points(a: float, b: float) -> str:
    return f"{100 * (b - a):+.1f}"


def _paired_clause(paired: Mapping[str, Any] | None) -> str:
    if not paired:
        return ""
    low, high = (100 * v for v in paired["difference_ci95"])
    return f" [{low:+.1f}, {high:+.1f}] (samples compared in pairs, McNemar {fmt_p(paired['mcnemar_p'])})"


def _moved(control: Mapping[str, Any], row: Mapping[str, Any], what: str) -> str:
    """One sentence: what `row` changed against its `control`, in points and bits/dim."""
    c, r = control["evaluation"], row["evaluation"]
    return (
        f"At equal epochs, {what} moved validation accuracy by"
        f" {_points(c['accuracy'], r['accuracy'])}"
        f" points ({fmt_pct(c['accuracy'])} to {fmt_pct(r['accuracy'])}\\pct), bits/dim by"
        f" {r['bits_per_dim'] - c['bits_per_dim']:+.3f}, and the share of samples judged in their class by"
        f" {_points(control['samples']['overall'], row['samples']['overall'])} points"
        f"{_paired_clause(row['samples'].get('paired_vs_control'))}."
    )


def _controlled(rows: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], Mapping[str, Any], str]]:
    """(row, its control, what the row changed) for each hybrid and each dropout row that has a control:
    the first likelihood row of equal epochs without dropout."""
    found = []
    for row in rows:
        objective = row["objective"]
        if objective.startswith("hybrid"):
            what = "the hybrid term at weight " + objective.split(",")[0].split()[1]
        elif objective.startswith("likelihood, dropout"):
            what = objective.split(", ")[-1]
        else:
            continue
        control = next(
            (r for r in rows if r["objective"] == "likelihood" and r["epochs"] == row["epochs"]), None
        )
        if control is not None:
            found.append((row, control, what))
    return found


def _comparison(rows: Sequence[Mapping[str, Any]]) -> str:
    """What each hybrid row and each dropout row changed against its control, in words."""
    return " ".join(_moved(control, row, what) for row, control, what in _controlled(rows))


def continuation_record(rows: list[list[str]], verdicts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The table's record: each row's numbers, and where a row and its control both have per-sample
    verdicts (`verdicts`: re-drawn sweeps by row label), their paired difference of judged shares."""
    verdicts = verdicts or {}
    built = [row_record(*row, verdicts=verdicts.get(row[0])) for row in rows]
    # the record names the verdicts portably; read them where this command was given them (given
    # verdicts take precedence over a sweep's own, as in _verdict_sweep)
    given = {label: Path(verdicts.get(label) or sweep) / "sweep.json" for label, _, _, sweep in rows}
    for row, control, _ in _controlled(built):
        if row["samples"]["verdicts"] and control["samples"]["verdicts"]:
            a, b = (json.loads(given[r["label"]].read_text()) for r in (row, control))
            paired = compare_sweeps(a, b, SAMPLE_SETTING)
            row["samples"]["paired_vs_control"] = {
                k: paired[k] for k in ("difference", "difference_ci95", "agree", "mcnemar_p")
            }
    return {"rows": built}


def continuation_tex(record: Mapping[str, Any], label: str = "continuation") -> str:
    """A LaTeX paragraph and table of the continuation `record`; `label` names the table (`tab:<label>`),
    so that the continuations of several checkpoints can stand in one report."""
    rows = record["rows"]
    first = rows[0]["samples"]
    classes = ", ".join(tex_escape(c) for c in first["per_class"])
    body = "\n".join(_row_tex(row) for row in rows)
    header = " & ".join(
        [
            "model",
            "objective",
            "epochs",
            r"accuracy \% [95\% CI]",
            "F1",
            "bits/dim",
            r"judged in class \% [95\% CI]",
            "weakest class \\%",
            "FID (floor)",
        ]
    )
    start = tex_escape(rows[0]["label"])
    return rf"""\paragraph{{Continued training of {start}.}} The checkpoint of the first row trained
further with a fresh optimiser under each objective (Table~\ref{{tab:{label}}}): the likelihood alone,
without dropout, is the control for dropout and for the hybrid term, which trains the Bayes classifier
partly discriminatively, a departure from the course's generative classifier. Accuracy and bits/dim are
on the {rows[0]["evaluation"]["n"]} validation
images (bootstrap 95\pct{{}} intervals); {first["n"]} samples per model ($T = 1$, no guidance) are judged
by the same baseline CNN (classes {classes}; {fmt_pct(first["judge_accuracy"])}\pct{{}} on validation),
and the FID is the matched protocol's.
{_comparison(rows)}

\begin{{table}}[htbp]
  \centering\footnotesize\setlength{{\tabcolsep}}{{3pt}}
  \caption{{Continued training of the first row's checkpoint: the classifier and the samples of each model.}}
  \label{{tab:{label}}}
  \resizebox{{\linewidth}}{{!}}{{\begin{{tabular}}{{llrrrrrrr}}
    \hline
    {header} \\
    \hline
{body}
    \hline
  \end{{tabular}}}}
\end{{table}}
"""


def rows_cli(
    argv: list[str] | None,
    *,
    name: str,
    description: str,
    build: Callable[[list[list[str]], dict[str, str]], dict[str, Any]],
    parents: Sequence[argparse.ArgumentParser] = (),
    update: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda record: None,
) -> tuple[dict[str, Any], Path] | None:
    """The command line shared by the row tables: `--out DIR --row LABEL RUN EVALUATION SWEEP ...` builds
    the record from the rows (`build`) and writes `DIR/<name>.json`; without `--row` it reads that record
    back, and writes it again where `update` (a table's own options, from `parents`) changes it. Returns
    the record and DIR, or None after printing what is missing."""
    parser = argparse.ArgumentParser(
        prog=f"python -m pcnn.reporting.{name}", description=description, parents=list(parents)
    )
    parser.add_argument("--out", required=True, help=f"folder for {name}.json and what is written from it")
    parser.add_argument(
        "--row",
        nargs=4,
        action="append",
        metavar=("LABEL", "RUN", "EVALUATION", "SWEEP"),
        help="a row: its label, run folder, `pcnn evaluate` JSON (validation) and sweep folder (repeatable;"
        f" the first is the baseline); none: rewrite from the folder's {name}.json",
    )
    parser.add_argument(
        "--verdicts",
        nargs=2,
        action="append",
        default=[],
        metavar=("LABEL", "SWEEP"),
        help="for the row LABEL whose sweep has no per-sample verdicts, a sweep folder of the same samples"
        " re-drawn with them (same --seed and judge; its shares must match): rows compare in pairs",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    record_path = out / f"{name}.json"
    try:
        if args.row:
            record = build(args.row, dict(args.verdicts))
        else:
            record = json.loads(record_path.read_text())
            changed = update(record)
            if changed is None:
                return record, out
            record = changed
        out.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=2) + "\n")
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    return record, out


def main(argv: list[str] | None = None) -> int:
    parsed = rows_cli(
        argv,
        name="continuation",
        description="Write the report's table of continued training (continuation.json, continuation.tex).",
        build=continuation_record,
    )
    if parsed is None:
        return 2
    record, out = parsed
    label = "".join(c if c.isalnum() else "-" for c in out.name)  # a folder name as a LaTeX label
    (out / "continuation.tex").write_text(continuation_tex(record, label))
    print(f"wrote {out / 'continuation.tex'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
