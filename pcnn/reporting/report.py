"""From results JSON to the report: LaTeX macros, tables, the report's figures, and the latexmk build.

Every number the report prints comes from here: `macros.tex` (one `\\newcommand` per number, e.g.
`\\ValAccuracy`) and the `table_*.tex` files are generated from the merged results (`results.json`), never
typed by hand. A value that was not measured prints as a sentence saying so (for FID without Inception
weights: "not measured (no Inception weights)"), never as an invented number.

The report sources in `report/` input these files by bare name; `build_report` puts the chosen figures
folder (`figures/` for the committed reference run, `build/<profile>/figures` for a pipeline build) on
TEXINPUTS, so the same sources build against either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation.metrics import wilson_interval
from pcnn.workflow.pipeline import REPORT_FIGURES as REPORT_FIGURES  # notebook 05 renders them from here
from pcnn.workflow.results import RECORDS, validate_record

NOT_MEASURED_FID = "not measured (no Inception weights)"
NA = "n/a"
RESULT_NAMES = tuple(RECORDS)  # data, training, finetune, ablation, sampling
# Figures the report shows in a "not in this build" box where the figures folder predates them: the
# committed reference build still compiles (`make paper`); a new build writes them all.
LATER_FIGURES = (
    "completions",
    "samples_temperatures",
    "real_vs_generated",
    "samples_over_training",
    "judge_per_class",
)
OPTIONAL_FIGURES = ("samples_reference",)
TABLES = (
    "table_ablation",
    "table_hyperparameters",
    "table_fid",
    "table_classification",
    "table_finetune",
    "table_checks",
    "table_original",
)
APT_PACKAGES = ("latexmk", "texlive-latex-recommended", "texlive-fonts-recommended", "texlive-pictures")


# The original PixelCNN++G report (the project this one reproduces), quoted: these numbers were not
# measured here and are printed as quotes, beside this build's measured ones (`original_table`). Its full
# model is the configuration of the `seed` profile; its reduced model has the `cpu` profile's size.
ORIGINAL_REPORT: tuple[dict[str, Any], ...] = (
    {
        "key": "Full",
        "model": "full model",
        "size": "nf 128, mix 100",
        "epochs": 801,
        "split": "test",
        "accuracy": 0.889,
        "macro_f1": 0.89,
        "fid_course": 21.3,
    },
    {
        "key": "ReducedShort",
        "model": "reduced model",
        "size": "nf 40, mix 10",
        "epochs": 200,
        "split": "validation",
        "accuracy": 0.741,
        "macro_f1": None,
        "fid_course": 37.6,
    },
    {
        "key": "ReducedLong",
        "model": "reduced model",
        "size": "nf 40, mix 10",
        "epochs": 350,
        "split": "validation",
        "accuracy": 0.812,
        "macro_f1": None,
        "fid_course": 28.7,
    },
)


class ReportError(RuntimeError):
    """The report could not be built (latexmk missing or a LaTeX error; the message has the log's end)."""


# --------------------------------------------------------------------------------------------- results


def merge_results(results_dir: str | Path, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All notebooks' results (`results/<name>.json`) in one dict, plus `meta` (profile, data source).

    Each record is checked against its schema (`pcnn.workflow.results`): one that lacks a field the report
    needs fails here, naming the notebook to run again; a missing file leaves its record None.
    """
    folder = Path(results_dir)
    merged: dict[str, Any] = {"meta": dict(meta or {})}
    for name in RESULT_NAMES:
        path = folder / f"{name}.json"
        merged[name] = validate_record(name, json.loads(path.read_text())) if path.is_file() else None
    return merged


# ---------------------------------------------------------------------------------------------- format


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: Any) -> str:
    """Text safe to print in LaTeX (the special characters escaped)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(value: Any, digits: int = 2, scale: float = 1.0, missing: str = NA) -> str:
    """A number with fixed decimals (after multiplying by `scale`), or `missing` when absent or not finite."""
    if not _finite(value):
        return missing
    return f"{value * scale:.{digits}f}"


def fmt_pct(value: Any, digits: int = 1, missing: str = NA) -> str:
    """A fraction as a percentage number (no % sign: the text adds it)."""
    return fmt(value, digits, 100.0, missing)


def fmt_ci(ci: Sequence[float] | None, digits: int = 1) -> str:
    """A 95% interval of a fraction, in percent: `[74.1, 80.3]`."""
    if not ci or not all(_finite(v) for v in ci):
        return NA
    return f"[{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}]"


def fmt_mean_std(summary: Mapping[str, Any] | None, digits: int = 1, missing: str = NOT_MEASURED_FID) -> str:
    """`mean $\\pm$ std (n seeds)` of a metric over seeds; `missing` when it was not measured."""
    if not summary or not _finite(summary.get("mean")):
        return missing
    std = summary.get("std")
    n = summary.get("n") or len(summary.get("values") or [])
    if _finite(std) and n and n > 1:
        return f"{summary['mean']:.{digits}f} $\\pm$ {std:.{digits}f}"
    return f"{summary['mean']:.{digits}f}"


def fmt_p(p: float) -> str:
    """A p-value for prose: `$p = 0.12$`, and `$p = 2\\times10^{-9}$` below 0.001."""
    return f"$p = {p:.2g}$" if p >= 1e-3 else "$p = " + fmt_sci(p).strip("$") + "$"


def fmt_sci(value: Any) -> str:
    """A number in LaTeX scientific notation, e.g. `$2\\times10^{-4}$`."""
    if not _finite(value):
        return NA
    mantissa, exponent = f"{value:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    exp = int(exponent)
    if exp == 0:
        return f"${mantissa}$"
    return f"${mantissa}\\times10^{{{exp}}}$" if mantissa != "1" else f"$10^{{{exp}}}$"


def _int(value: Any) -> str:
    return str(int(value)) if _finite(value) else NA


def _get(data: Any, *keys: Any, default: Any = None) -> Any:
    for key in keys:
        if isinstance(data, Mapping) and key in data:
            data = data[key]
        elif isinstance(data, list) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return default
    return data


# ---------------------------------------------------------------------------------------------- macros


_MACRO_NAME = re.compile(r"^[A-Za-z]+$")


def _fid_summary(sampling: Any, protocol: str, which: str) -> dict[str, Any] | None:
    return _get(sampling, "fid", protocol, which)


def _fid_missing(sampling: Any) -> str:
    if _get(sampling, "fid", "available") is False:
        return NOT_MEASURED_FID
    return NA


def _prefix_at(curve: Any, fraction: float) -> Any:
    if not curve:
        return None
    fractions = np.asarray(curve["fractions"], dtype=float)
    index = int(np.argmin(np.abs(fractions - fraction)))
    return curve["accuracy"][index]


def _objective_text(train_cfg: Mapping[str, Any]) -> str:
    weight = train_cfg.get("disc_weight") or 0.0
    if not _finite(weight) or weight <= 0:
        return "the plain likelihood objective ($\\lambda = 0$)"
    fraction = fmt(train_cfg.get("disc_fraction"), 3)
    return f"the hybrid objective, $\\lambda = {fmt(weight, 3)}$ on $f = {fraction}$ of each batch"


def _temperature_choice_text(choice: Mapping[str, Any] | None) -> str:
    """Why the samples were drawn at their temperature, as a parenthetical of the report's text (records
    without a choice sampled the model as trained)."""
    if not choice:
        return "the model as trained"
    scored = choice.get("candidates") or {}
    if not scored:
        return tex_escape(choice.get("note") or "the model as trained")
    listed = ", ".join(f"$T = {float(t):g}$: {fmt(c.get('fid'), 1)}" for t, c in scored.items())
    return (
        f"chosen by the lowest matched-protocol FID ({listed}) on a selection draw of "
        f"{_int(choice.get('n_samples'))} samples at seed {_int(choice.get('seed'))}, scored against "
        "training images only and drawn apart from the reported draws"
    )


def _temperature_departure(temperature: float) -> str:
    """The clause that states sampling below T = 1 as a departure from the original report, or nothing."""
    if temperature == 1.0:
        return ""
    return "; sampling below $T = 1$ departs from the original report, which samples the model as trained"


def report_macros(results: Mapping[str, Any]) -> dict[str, str]:
    """Macro name -> LaTeX text for every number and word the report's prose uses."""
    meta = results.get("meta") or {}
    data, training = results.get("data") or {}, results.get("training") or {}
    finetune, sampling = results.get("finetune") or {}, results.get("sampling") or {}
    ablation = results.get("ablation") or []
    config = training.get("config") or {}
    model_cfg, train_cfg = config.get("model", {}), config.get("train", {})
    val = training.get("validation") or {}
    profile = meta.get("profile") or config.get("name") or "unknown"
    source = meta.get("data_source") or data.get("data_source") or "unknown"
    fid_missing = _fid_missing(sampling)
    temperature = float(_get(sampling, "temperature", "chosen", default=1.0))
    speed = sampling.get("speed") or []
    batch = max((r["batch"] for r in speed), default=None)
    cached = next((r for r in speed if r["method"] == "cached" and r["batch"] == batch), None)
    naive = next((r for r in speed if r["method"] == "naive" and r["batch"] == batch), None)
    splits = data.get("splits") or {}
    best_row = max(
        (r for r in ablation if _finite(r.get("val_accuracy"))), key=lambda r: r["val_accuracy"], default=None
    )
    macros = {
        "ReportProfile": tex_escape(profile),
        "ReportDataSource": "the synthetic stand-in data set"
        if source == "synthetic"
        else "the CPEN455 course data",
        "ReportDevice": tex_escape(training.get("device") or meta.get("device") or NA),
        "NumTrain": _int(_get(splits, "train", "images")),
        "NumValidation": _int(_get(splits, "validation", "images")),
        "NumTest": _int(_get(splits, "test", "images")),
        "NumGrayscale": _int(data.get("grayscale")),
        "NrResnet": _int(model_cfg.get("nr_resnet")),
        "NrResnetDown": _int(model_cfg["nr_resnet"] + 1) if _finite(model_cfg.get("nr_resnet")) else NA,
        "NrFilters": _int(model_cfg.get("nr_filters")),
        "NrMix": _int(model_cfg.get("nr_logistic_mix")),
        "NumParams": f"{training['parameters']:,}".replace(",", "{,}")
        if _finite(training.get("parameters"))
        else NA,
        "BatchSize": _int(train_cfg.get("batch_size")),
        "LearningRate": fmt_sci(train_cfg.get("lr")),
        "TrainSteps": _int(training.get("steps")),
        "TrainEpochs": _int(training.get("epochs")),
        "TrainMinutes": fmt(_get(training, "wall_time_s"), 1, 1 / 60),
        "SelectedEpoch": _int(training.get("selected_epoch")),
        "SelectedOn": tex_escape(training.get("selected_on") or NA),
        "ValImages": _int(val.get("n")),
        "ValAccuracy": fmt_pct(val.get("accuracy")),
        "ValAccuracyCI": fmt_ci(val.get("accuracy_ci95")),
        "ValFOne": fmt(val.get("macro_f1"), 3),
        "ValECE": fmt(val.get("ece"), 3),
        "ValBpd": fmt(val.get("bits_per_dim"), 3),
        "PrefixImages": _int(_get(training, "prefix", "n")),
        "PrefixAccuracyQuarter": fmt_pct(_prefix_at(training.get("prefix"), 0.25)),
        "PrefixAccuracyHalf": fmt_pct(_prefix_at(training.get("prefix"), 0.5)),
        "FtBudget": tex_escape(finetune.get("budget") or NA),
        "FtFocus": tex_escape(", ".join(finetune.get("focus_names") or []) or "none"),
        "FtLrFactor": fmt(finetune.get("lr_factor"), 2),
        "FtFocusShare": fmt_pct(_get(finetune, "config", "train", "focus_share"), 0),
        "FtBaseAccuracy": fmt_pct(_get(finetune, "base", "accuracy")),
        "FtAccuracy": fmt_pct(_get(finetune, "finetuned", "accuracy")),
        "FtBaseBpd": fmt(_get(finetune, "base", "bits_per_dim"), 3),
        "FtBpd": fmt(_get(finetune, "finetuned", "bits_per_dim"), 3),
        "FtBetter": "improved"
        if _finite(_get(finetune, "finetuned", "accuracy"))
        and _finite(_get(finetune, "base", "accuracy"))
        and finetune["finetuned"]["accuracy"] > finetune["base"]["accuracy"]
        else "did not improve",
        "FidCourse": fmt_mean_std(_fid_summary(sampling, "course", "model"), missing=fid_missing),
        "FidCourseFloor": fmt_mean_std(_fid_summary(sampling, "course", "floor"), missing=fid_missing),
        "FidCourseSamples": _int(_get(sampling, "fid", "course", "model", "n_samples")),
        "FidCourseDims": _int(_get(sampling, "fid", "course", "model", "dims")),
        "FidMatchedDims": _int(_get(sampling, "fid", "matched", "model", "dims")),
        "FidCourseSeeds": _int(len(_get(sampling, "fid", "course", "model", "seeds", default=[])) or None),
        "FidMatched": fmt_mean_std(_fid_summary(sampling, "matched", "model"), missing=fid_missing),
        "FidMatchedFloor": fmt_mean_std(_fid_summary(sampling, "matched", "floor"), missing=fid_missing),
        "KidMatched": fmt(_get(sampling, "fid", "matched", "model", "kid_mean"), 4, missing=fid_missing),
        "FidMatchedSamples": _int(_get(sampling, "fid", "matched", "model", "n_samples")),
        "FidMatchedDraws": _int(_get(sampling, "fid", "matched", "model", "n")),
        "JudgeShare": fmt_pct(_get(sampling, "checks", "class_consistency", "overall")),
        "JudgeShareCI": fmt_ci(_get(sampling, "checks", "class_consistency", "overall_ci95")),
        "SampleTemperature": f"{temperature:g}",
        "SampleTemperatureChoice": _temperature_choice_text(sampling.get("temperature")),
        "SampleTemperatureDeparture": _temperature_departure(temperature),
        "SpeedBatch": _int(batch),
        "SpeedCached": fmt(_get(cached, "seconds_per_image"), 2),
        "SpeedNaive": fmt(_get(naive, "seconds_per_image"), 2),
        "SpeedUp": fmt(_get(naive, "seconds") / cached["seconds"], 0)
        if cached and naive and _finite(cached.get("seconds")) and cached["seconds"] > 0
        else NA,
        "SpeedNaiveHow": "timed" if _get(naive, "measured") == "timed" else "estimated from one forward pass",
        "TrainObjective": _objective_text(train_cfg),
        "AblationBudget": tex_escape(ablation[0]["budget"]) if ablation else NA,
        "AblationBest": tex_escape(best_row["name"]) if best_row else NA,
        "AblationVariants": _int(len(ablation) or None),
        "SubmissionFile": tex_escape(training.get("submission") or NA),
        **_original_macros(),
    }
    for name in macros:
        if not _MACRO_NAME.match(name):
            raise ValueError(f"macro name {name!r} must be letters only")
    return macros


def _original_macros() -> dict[str, str]:
    """`\\OrigFullAccuracy`, `\\OrigReducedShortFid`, ...: the original report's quoted numbers."""
    macros = {}
    for row in ORIGINAL_REPORT:
        macros[f"Orig{row['key']}Accuracy"] = fmt_pct(row["accuracy"])
        macros[f"Orig{row['key']}Fid"] = fmt(row["fid_course"], 1)
        macros[f"Orig{row['key']}Epochs"] = _int(row["epochs"])
        if row["macro_f1"] is not None:
            macros[f"Orig{row['key']}FOne"] = fmt(row["macro_f1"], 2)
    return macros


def fid_course_below_floor(sampling: Mapping[str, Any] | None) -> bool:
    """Whether the samples' course-protocol FID is below the floor that real images reach under it.

    Then that protocol cannot rank sample quality: even the real data scores worse than the samples.
    """
    model = _get(_fid_summary(sampling, "course", "model"), "mean")
    floor = _get(_fid_summary(sampling, "course", "floor"), "mean")
    return _finite(model) and _finite(floor) and model < floor


def _newif(name: str, value: bool) -> str:
    return f"\\newif\\if{name}\\{name}{'true' if value else 'false'}"


def macros_tex(results: Mapping[str, Any]) -> str:
    """The `macros.tex` file: conditionals for the profile and data, then one command per number."""
    meta = results.get("meta") or {}
    smoke = (meta.get("profile") or "") == "smoke"
    synthetic = (meta.get("data_source") or _get(results, "data", "data_source")) == "synthetic"
    disc_weight = _get(results, "training", "config", "train", "disc_weight")
    lines = [
        "% Generated by pcnn.report from results.json; do not edit by hand.",
        r"\newif\ifSmokeBuild" + ("\\SmokeBuildtrue" if smoke else "\\SmokeBuildfalse"),
        r"\newif\ifSyntheticData" + ("\\SyntheticDatatrue" if synthetic else "\\SyntheticDatafalse"),
        r"\newif\ifFidMeasured"
        + ("\\FidMeasuredtrue" if _get(results, "sampling", "fid", "available") else "\\FidMeasuredfalse"),
        _newif("FidCourseBelowFloor", fid_course_below_floor(results.get("sampling"))),
        _newif("SubmissionWritten", bool(_get(results, "training", "submission"))),
        _newif("HybridObjective", _finite(disc_weight) and disc_weight > 0),
    ]
    for name, value in report_macros(results).items():
        lines.append(f"\\newcommand{{\\{name}}}{{{value}}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- tables


def _tabular(
    columns: str, header: Sequence[str], rows: Iterable[Sequence[str]], note: str | None = None
) -> str:
    lines = [
        "% Generated by pcnn.report; do not edit by hand.",
        f"\\begin{{tabular}}{{{columns}}}",
        r"\toprule",
        " & ".join(header) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines.append(r"\bottomrule")
    lines.append(r"\end{tabular}")
    if note:
        lines.append(f"\\par\\smallskip{{\\footnotesize {note}}}")
    return "\n".join(lines) + "\n"


def ablation_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Variants: validation accuracy with its 95% interval, macro F1, bits/dim and course FID."""
    body = []
    for r in rows:
        fid = r.get("fid_course_mean")
        fid_text = (
            (
                f"{fid:.1f}"
                + (
                    f" $\\pm$ {r['fid_course_std']:.1f}"
                    if _finite(r.get("fid_course_std")) and r["fid_course_std"] > 0
                    else ""
                )
            )
            if _finite(fid)
            else "--"
        )
        body.append(
            [
                tex_escape(r["name"]),
                fmt_pct(r.get("val_accuracy"))
                + (f" {fmt_ci(r.get('val_accuracy_ci'))}" if r.get("val_accuracy_ci") else ""),
                fmt(r.get("val_f1"), 3),
                fmt(r.get("val_bpd"), 3),
                fid_text,
            ]
        )
    notes = sorted(
        {r.get("fid_note") for r in rows if r.get("fid_note") and not _finite(r.get("fid_course_mean"))}
    )
    budget = rows[0]["budget"] if rows else NA
    note = f"Budget per variant: {tex_escape(budget)}; final weights, not selected on validation."
    if notes:
        note += " FID --: " + tex_escape("; ".join(notes)) + "."
    return _tabular(
        "lcccc",
        ["variant", "val.\\ acc.\\ \\% [95\\% CI]", "macro F1", "bits/dim", "FID (course)"],
        body,
        note,
    )


def original_table(results: Mapping[str, Any]) -> str:
    """This build beside the original report: its quoted numbers (`ORIGINAL_REPORT`) and ours, measured."""
    training, sampling = results.get("training") or {}, results.get("sampling") or {}
    config = training.get("config") or {}
    model, val = config.get("model") or {}, training.get("validation") or {}
    fid_missing = _fid_missing(sampling)
    rows: list[list[str]] = [["\\multicolumn{7}{l}{\\emph{original report (quoted, not measured here)}}"]]
    rows += [
        [
            row["model"],
            row["size"],
            f"{row['epochs']} epochs, GPU",
            row["split"],
            fmt_pct(row["accuracy"]),
            fmt(row["macro_f1"], 2, missing="--"),
            fmt(row["fid_course"], 1),
        ]
        for row in ORIGINAL_REPORT
    ]
    device = tex_escape(training.get("device") or _get(results, "meta", "device") or NA)
    minutes = fmt(training.get("wall_time_s"), 0, 1 / 60)
    rows.append(["\\midrule\\multicolumn{7}{l}{\\emph{this build (measured)}}"])
    rows.append(
        [
            f"\\texttt{{{tex_escape(config.get('name') or NA)}}} profile",
            f"nf {_int(model.get('nr_filters'))}, mix {_int(model.get('nr_logistic_mix'))}",
            f"{_int(training.get('epochs'))} epochs, {minutes} min, {device}",
            "validation",
            f"{fmt_pct(val.get('accuracy'))} {fmt_ci(val.get('accuracy_ci95'))}",
            fmt(val.get("macro_f1"), 2),
            fmt_mean_std(_fid_summary(sampling, "course", "model"), missing=fid_missing),
        ]
    )
    course = _get(sampling, "fid", "course", "model") or {}
    floor = fmt_mean_std(_fid_summary(sampling, "course", "floor"), missing=fid_missing)
    note = (
        "The course data's test split is unlabelled, so this build's accuracy is on the validation split, "
        "with its bootstrap 95\\% interval. F1: macro F1. FID: course protocol, "
        f"{_int(course.get('n_samples'))} samples, Inception dimension {_int(course.get('dims'))}; real "
        f"images score {floor} under it in this build."
    )
    header = ["model", "size", "training", "split", "accuracy \\%", "F1", "FID"]
    return _tabular("lllcccc", header, rows, note)


def hyperparameter_table(config: Mapping[str, Any], parameters: int | None = None) -> str:
    """Every model field and the training fields that shape the run, from the run's resolved config."""
    model, train = config.get("model", {}), config.get("train", {})
    keys = [
        "epochs",
        "max_steps",
        "max_minutes",
        "max_train_images",
        "batch_size",
        "lr",
        "lr_decay",
        "lr_switch_epoch",
        "lr_after_switch",
        "lr_decay_after_switch",
        "seed",
        "augment",
        "polyak",
        "polyak_decay",
        "eval_every",
        "eval_subset",
        "precision",
        "disc_weight",
        "grad_clip",
    ]
    rows = [[f"model.{tex_escape(k)}", tex_escape(_plain(v))] for k, v in model.items()]
    if parameters is not None:
        rows.append(["parameters", f"{parameters:,}".replace(",", "{,}")])
    rows += [[f"train.{tex_escape(k)}", tex_escape(_plain(train[k]))] for k in keys if k in train]
    return _tabular(
        "ll",
        ["setting", "value"],
        rows,
        f"Profile {tex_escape(config.get('name', NA))}; 0 means unlimited for budgets.",
    )


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fid_table(sampling: Mapping[str, Any] | None) -> str:
    """Both FID protocols: model (mean +- std over seeds) beside the real-data floor, and KID."""
    fid = (sampling or {}).get("fid") or {}
    missing = NOT_MEASURED_FID if fid.get("available") is False else NA
    rows = []
    for protocol, label in (("course", "course"), ("matched", "matched")):
        model = fid.get(protocol, {}).get("model") if fid.get(protocol) else None
        floor = fid.get(protocol, {}).get("floor") if fid.get(protocol) else None
        kid = _get(model, "kid_mean")
        rows.append(
            [
                label,
                _int(_get(model, "n_samples")),
                _int(_get(model, "dims")),
                fmt_mean_std(model, missing=missing),
                fmt_mean_std(floor, missing=missing),
                fmt(kid, 4, missing="--"),
            ]
        )
    note = (
        "Course: samples saved as the course's JPEGs against the test folder. Matched: equal numbers of "
        "samples and real training images at 32x32. Floor: real images scored the same way."
    )
    if fid.get("available") is False:
        note = "FID " + NOT_MEASURED_FID + ". " + note
    return _tabular(
        "lccccc", ["protocol", "samples", "dims", "FID model", "FID floor", "KID model"], rows, note
    )


def classification_table(validation: Mapping[str, Any] | None) -> str:
    """Per-class accuracy, bits/dim and support, then the overall numbers with the 95% interval."""
    val = validation or {}
    cm = np.asarray(val.get("confusion_matrix") or np.zeros((len(CLASS_NAMES), len(CLASS_NAMES))))
    rows = []
    for k, name in enumerate(CLASS_NAMES):
        rows.append(
            [
                tex_escape(name),
                fmt_pct(_get(val, "per_class_accuracy", name)),
                fmt(_get(val, "per_class_bits_per_dim", name), 3),
                str(int(cm[k].sum()) if cm.size else 0),
            ]
        )
    rows.append(
        [
            r"\midrule all",
            f"{fmt_pct(val.get('accuracy'))} {fmt_ci(val.get('accuracy_ci95'))}",
            fmt(val.get("bits_per_dim"), 3),
            _int(val.get("n")),
        ]
    )
    return _tabular(
        "lccc",
        ["class", "accuracy \\%", "bits/dim", "images"],
        rows,
        f"Macro F1 {fmt(val.get('macro_f1'), 3)}; ECE {fmt(val.get('ece'), 3)}.",
    )


def finetune_table(finetune: Mapping[str, Any] | None) -> str:
    """Base and fine-tuned model on the validation split."""
    ft = finetune or {}
    rows = []
    for key, label in (("base", "base model"), ("finetuned", "fine-tuned")):
        m = ft.get(key) or {}
        rows.append(
            [
                label,
                f"{fmt_pct(m.get('accuracy'))} {fmt_ci(m.get('accuracy_ci95'))}",
                fmt(m.get("macro_f1"), 3),
                fmt(m.get("bits_per_dim"), 3),
            ]
        )
    note = (
        f"Fine-tuning: {tex_escape(ft.get('budget') or NA)}, learning rate x{fmt(ft.get('lr_factor'), 2)}, "
        f"focus classes: {tex_escape(', '.join(ft.get('focus_names') or []) or 'none')}; "
        f"checkpoint selected on a held-out {fmt_pct(ft.get('holdout'), 0)}\\% of the training split."
    )
    return _tabular("lccc", ["model", "val.\\ acc.\\ \\% [95\\% CI]", "macro F1", "bits/dim"], rows, note)


def checks_table(training: Mapping[str, Any] | None, sampling: Mapping[str, Any] | None) -> str:
    """Classifier options (TTA, prior), the discriminative baseline, sample checks and per-class FID."""
    training, sampling = training or {}, sampling or {}
    checks = sampling.get("checks") or {}
    rows = []
    for row in training.get("tta_prior") or []:
        rows.append(
            [
                f"Bayes rule, {tex_escape(row['setting'])}",
                f"{fmt_pct(row.get('accuracy'))} {fmt_ci(row.get('accuracy_ci95'))}",
                f"macro F1 {fmt(row.get('macro_f1'), 3)}; "
                f"{_int(row.get('changed_vs_plain'))} predictions changed",
            ]
        )
    baseline = checks.get("baseline") or {}
    if baseline:
        rows.append(
            [
                r"\midrule baseline CNN (discriminative)",
                f"{fmt_pct(baseline.get('accuracy'))} {fmt_ci(baseline.get('accuracy_ci95'))}",
                f"macro F1 {fmt(baseline.get('macro_f1'), 3)}; {fmt(baseline.get('epochs'), 1)} epochs, "
                f"{fmt(baseline.get('train_seconds'), 1, 1 / 60)} min",
            ]
        )
    consistency = checks.get("class_consistency") or {}
    if consistency:
        per_class = ", ".join(
            f"{tex_escape(name)} {fmt_pct(value, 0)}"
            for name, value in (consistency.get("per_class") or {}).items()
        )
        rows.append(
            [
                "samples the baseline assigns to their class",
                f"{fmt_pct(consistency.get('overall'))} {fmt_ci(consistency.get('overall_ci95'))}",
                f"{_int(consistency.get('n'))} samples: {per_class}",
            ]
        )
    per_class_fid = _get(sampling, "fid", "matched", "per_class") or {}
    for name, values in per_class_fid.items():
        rows.append(
            [
                f"FID of {tex_escape(name)} samples (matched, per class)",
                fmt(values.get("model"), 1),
                f"real-data floor {fmt(values.get('floor'), 1)}",
            ]
        )
    distance = checks.get("nearest_neighbour_distance") or {}
    if distance:
        rows.append(
            [
                "L2 distance to the nearest training image",
                fmt(distance.get("mean"), 1),
                f"minimum {fmt(distance.get('min'), 1)} over {_int(distance.get('n_samples'))} samples, "
                f"{_int(distance.get('n_train'))} training images",
            ]
        )
    if not rows:
        rows.append(["not measured in this build", NA, ""])
    return _tabular(
        "lcp{0.38\\linewidth}",  # the details wrap: the report is one 5.5-inch column
        ["check", "value", "detail"],
        rows,
        "Accuracies on the validation split with bootstrap 95\\% intervals. Per-class FID uses a quarter of "
        "the matched protocol's images and is biased upwards; compare it with its own floor only.",
    )


def judge_per_class(
    consistency: Mapping[str, Any], baseline: Mapping[str, Any], class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, dict[str, Any]]:
    """Per class: the share of samples the judge puts in their class, and the judge's recall on real
    validation images (its confusion matrix's diagonal over the row), each with its Wilson 95% interval.

    The recall says how far the judge can be trusted on that class; a low sample share where the recall
    is high points at the samples, not the judge.
    """
    matrix = np.asarray(baseline["confusion_matrix"], dtype=int)
    rows: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(class_names):
        n_samples = int(consistency["per_class_n"].get(name) or 0)
        hits = round((consistency["per_class"].get(name) or 0) * n_samples)
        rows[name] = {
            **_share("samples", hits, n_samples),
            **_share("real", int(matrix[k, k]), int(matrix[k].sum())),
        }
    return rows


def _share(key: str, hits: int, n: int) -> dict[str, Any]:
    """`<key>_share`, `<key>_n` and `<key>_ci95`; the share and interval are None when n is 0."""
    if not n:
        return {f"{key}_share": None, f"{key}_n": 0, f"{key}_ci95": None}
    return {f"{key}_share": hits / n, f"{key}_n": n, f"{key}_ci95": list(wilson_interval(hits, n))}


def write_tables(results: Mapping[str, Any], figures_dir: str | Path) -> list[Path]:
    """Write `macros.tex` and every `table_*.tex` into the figures folder."""
    folder = Path(figures_dir)
    folder.mkdir(parents=True, exist_ok=True)
    training = results.get("training") or {}
    contents = {
        "macros.tex": macros_tex(results),
        "table_ablation.tex": ablation_table(results.get("ablation") or []),
        "table_hyperparameters.tex": hyperparameter_table(
            training.get("config") or {}, training.get("parameters")
        ),
        "table_fid.tex": fid_table(results.get("sampling")),
        "table_classification.tex": classification_table(training.get("validation")),
        "table_finetune.tex": finetune_table(results.get("finetune")),
        "table_checks.tex": checks_table(training, results.get("sampling")),
        "table_original.tex": original_table(results),
    }
    paths = []
    for name, text in contents.items():
        path = folder / name
        path.write_text(text)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------- figures


def _load_npz(results_dir: Path, name: str) -> dict[str, np.ndarray] | None:
    path = results_dir / f"{name}.npz"
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _title(results: Mapping[str, Any], text: str) -> str:
    meta = results.get("meta") or {}
    tag = meta.get("profile", "")
    if meta.get("data_source") == "synthetic":
        tag += ", synthetic data"
    return f"{text} ({tag})" if tag else text


def _fig_training_curves(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import training_curves_figure

    training = results["training"]
    curve = training.get("loss_curve") or {"step": [], "loss": []}
    train_cfg = _get(training, "config", "train", default={})
    hybrid = (train_cfg.get("disc_weight") or 0) > 0
    return training_curves_figure(
        list(zip(curve["step"], curve["loss"])),
        training.get("metrics") or [],
        _title(results, "Training curves"),
        hybrid_from_epoch=train_cfg.get("disc_start_epoch") if hybrid else None,
    )


def _fig_confusion(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import confusion_matrix_figure

    val = results["training"]["validation"]
    return confusion_matrix_figure(
        val["confusion_matrix"],
        CLASS_NAMES,
        _title(results, f"Confusion matrix, {val['n']} validation images"),
    )


def _fig_reliability(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import reliability_figure

    val = results["training"]["validation"]
    return reliability_figure(val["reliability"], val["ece"], "Calibration")


def _fig_prefix(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import accuracy_vs_fraction_figure

    return accuracy_vs_fraction_figure(results["training"]["prefix"], "Accuracy vs image seen")


def _fig_per_class_bpd(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import per_class_bpd_figure

    return per_class_bpd_figure(
        results["training"]["validation"]["per_class_bits_per_dim"], "Validation bits/dim per class"
    )


def _fig_samples(
    results: Mapping[str, Any], results_dir: Path, name: str = "samples", label: str = ""
) -> Any:
    from pcnn.reporting.plots import image_grid_figure, samples_by_class

    data = _load_npz(results_dir, name)
    if data is None:
        raise FileNotFoundError(f"{results_dir / name}.npz is missing: run 04_sampling_and_fid first")
    per_class = int(np.bincount(data["labels"]).max())
    grid = samples_by_class(data["images"], data["labels"], len(CLASS_NAMES), per_class)
    return image_grid_figure(grid, list(CLASS_NAMES), _title(results, f"Samples per class{label}"))


def _fig_reference(results: Mapping[str, Any], results_dir: Path) -> Any:
    return _fig_samples(results, results_dir, "reference_samples", ", reference checkpoint")


def fid_entries(sampling: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Bars of the FID figure: model and floor per protocol (None means not measured, with the reason)."""
    fid = (sampling or {}).get("fid") or {}
    note = NOT_MEASURED_FID if fid.get("available") is False else "not measured"
    entries = []
    for protocol, label in (
        ("course", "course protocol (dims 192)"),
        ("matched", "matched protocol (dims 2048)"),
    ):
        for which, what in (("model", "model"), ("floor", "real-data floor")):
            summary = _get(fid, protocol, which) or {}
            entries.append(
                {
                    "protocol": label,
                    "what": what,
                    "mean": summary.get("mean"),
                    "std": summary.get("std"),
                    "note": note,
                }
            )
    return entries


def _fig_fid(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import fid_floor_figure

    return fid_floor_figure(
        fid_entries(results.get("sampling")), _title(results, "FID beside the real-data floor")
    )


def _fig_ablation(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import ablation_figure

    rows = results["ablation"]
    return ablation_figure(rows, _title(results, f"Conditioning variants, {rows[0]['budget']} each"))


def _fig_finetune(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import comparison_figure

    ft = results["finetune"]
    return comparison_figure(
        {"base": ft["base"], "fine-tuned": ft["finetuned"]}, CLASS_NAMES, "Base vs fine-tuned (validation)"
    )


def _fig_data_examples(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.reporting.plots import image_grid_figure

    data = _load_npz(results_dir, "data_examples")
    if data is None:
        raise FileNotFoundError(f"{results_dir}/data_examples.npz is missing: run 00_data_exploration first")
    return image_grid_figure(data["grid"], list(CLASS_NAMES), _title(results, "Training images (32x32)"))


def _fig_speed(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import sampler_speed_figure

    return sampler_speed_figure(results["sampling"]["speed"], "Sampler speed (32x32 images)")


def _fig_nearest(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.evaluation.analysis import nearest_neighbour_grid_figure

    data = _load_npz(results_dir, "nearest_neighbours")
    if data is None:
        raise FileNotFoundError(
            f"{results_dir}/nearest_neighbours.npz is missing: run 04_sampling_and_fid first"
        )
    title = _title(results, "Samples beside their nearest training images (L2 in pixels)")
    return nearest_neighbour_grid_figure(data["grid"], data["labels"], title=title)


def _need_npz(results_dir: Path, name: str) -> dict[str, np.ndarray]:
    data = _load_npz(results_dir, name)
    if data is None:
        raise FileNotFoundError(f"{results_dir / name}.npz is missing: run 04_sampling_and_fid first")
    return data


def _fig_completions(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.reporting.plots import completions_figure

    data = _need_npz(results_dir, "completions")
    rows = int(data["rows"])
    other = data.get("other")
    return completions_figure(
        data["originals"],
        data["completions"],
        data["labels"].tolist(),
        CLASS_NAMES,
        rows,
        other=other,
        other_labels=data["other_labels"].tolist() if other is not None else None,
        title=_title(results, f"Completions of the top {rows} rows of validation images"),
    )


def _fig_temperatures(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.reporting.plots import temperature_figure

    data = _need_npz(results_dir, "samples_temperatures")
    return temperature_figure(
        data["images"],
        CLASS_NAMES,
        data["temperatures"].tolist(),
        _title(results, "Samples at several temperatures, one seed"),
    )


def _fig_real_vs_generated(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.reporting.plots import real_vs_generated_figure

    data = _need_npz(results_dir, "real_vs_generated")
    return real_vs_generated_figure(
        data["real"], data["generated"], CLASS_NAMES, _title(results, "Training images and samples")
    )


def _fig_over_training(results: Mapping[str, Any], results_dir: Path) -> Any:
    from pcnn.reporting.plots import samples_over_training_figure

    data = _need_npz(results_dir, "training_samples")
    return samples_over_training_figure(
        list(data["grids"]), data["epochs"].tolist(), _title(results, "Samples during training")
    )


def _fig_judge(results: Mapping[str, Any], _: Path) -> Any:
    from pcnn.reporting.plots import judge_per_class_figure

    per_class = _get(results, "sampling", "checks", "judge_per_class")
    if per_class is None:
        raise FileNotFoundError("sampling.checks.judge_per_class is missing: run 04_sampling_and_fid first")
    n = sum(row["samples_n"] for row in per_class.values())
    return judge_per_class_figure(per_class, _title(results, f"Baseline CNN as judge, {n} samples"))


FIGURE_MAKERS: dict[str, Callable[[Mapping[str, Any], Path], Any]] = {
    "training_curves": _fig_training_curves,
    "confusion_matrix": _fig_confusion,
    "reliability": _fig_reliability,
    "accuracy_vs_fraction": _fig_prefix,
    "per_class_bpd": _fig_per_class_bpd,
    "samples_per_class": _fig_samples,
    "samples_reference": _fig_reference,
    "fid_floor": _fig_fid,
    "ablation": _fig_ablation,
    "finetune_comparison": _fig_finetune,
    "data_examples": _fig_data_examples,
    "sampler_speed": _fig_speed,
    "nearest_neighbours": _fig_nearest,
    "completions": _fig_completions,
    "samples_temperatures": _fig_temperatures,
    "real_vs_generated": _fig_real_vs_generated,
    "samples_over_training": _fig_over_training,
    "judge_per_class": _fig_judge,
}


def render_figure(
    stem: str, results: Mapping[str, Any], results_dir: str | Path, figures_dir: str | Path
) -> tuple[Any, list[Path]]:
    """Draw one named figure from the results and save it as PDF and PNG; returns (figure, paths)."""
    from pcnn.reporting.plots import save_figure

    if stem not in FIGURE_MAKERS:
        raise KeyError(f"unknown figure {stem!r}; known: {', '.join(FIGURE_MAKERS)}")
    fig = FIGURE_MAKERS[stem](results, Path(results_dir))
    return fig, save_figure(fig, Path(figures_dir) / stem)


def write_manifest(figures_dir: str | Path, files: Iterable[Path], meta: Mapping[str, Any]) -> Path:
    """`manifest.json`: every file this build wrote into the figures folder, with its SHA-256."""
    folder = Path(figures_dir)
    entries = {}
    for path in sorted({Path(p) for p in files}):
        entries[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    path = folder / "manifest.json"
    path.write_text(json.dumps({"meta": dict(meta), "files": entries}, indent=2) + "\n")
    return path


# ----------------------------------------------------------------------------------------------- build


_INCLUDE = re.compile(r"\\(includegraphics|laterfigure|input)\s*(?:\[[^\]]*\])?\s*\{([^}#]+)\}")


def included_files(report_dir: str | Path) -> dict[str, str]:
    """Names the report sources include that are not sources themselves: name -> `figure` or `input`.

    Figures wrapped in `\\optionalfigure` (the reference checkpoint's samples) are not listed; those in
    `\\laterfigure` (`LATER_FIGURES`) are: a new build must write them.
    """
    folder = Path(report_dir)
    sources = {p.stem for p in folder.glob("*.tex")}
    found: dict[str, str] = {}
    for tex in sorted(folder.glob("*.tex")):
        text = "\n".join(
            line.split("%", 1)[0] if not line.lstrip().startswith("\\%") else line
            for line in tex.read_text().splitlines()
        )
        for kind, name in _INCLUDE.findall(text):
            stem = Path(name.strip()).stem if kind == "input" else name.strip()
            if stem in sources:
                continue
            found[name.strip()] = "input" if kind == "input" else "figure"
    return found


def missing_files(figures_dir: str | Path, report_dir: str | Path) -> list[str]:
    """What the report includes that the figures folder lacks, but for `LATER_FIGURES` (a note replaces
    them in a folder older than they are)."""
    figures = Path(figures_dir)
    return [
        name
        for name in included_files(report_dir)
        if name not in LATER_FIGURES
        and not any((figures / f"{name}{ext}").is_file() for ext in ("", ".pdf", ".tex", ".png"))
    ]


def latexmk_available() -> bool:
    return shutil.which("latexmk") is not None and shutil.which("pdflatex") is not None


def install_hint() -> str:
    """How to get latexmk and TeX Live (Debian/Ubuntu packages)."""
    return f"sudo apt-get update && sudo apt-get install -y --no-install-recommends {' '.join(APT_PACKAGES)}"


def build_report(
    figures_dir: str | Path,
    out_pdf: str | Path,
    *,
    report_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    quiet: bool = True,
) -> Path:
    """Compile `report/main.tex` against a figures folder with latexmk; returns the PDF path.

    The figures folder is put first on TEXINPUTS, so `\\input{macros}` and `\\includegraphics{name}` find
    that build's files (a folder older than a `LATER_FIGURES` figure shows a note in its place);
    auxiliary files go to `work_dir` (default `<out_pdf's folder>/latex/`), so that a PDF written into a
    source folder (`make paper`: `report/pcnn_report.pdf`) leaves no LaTeX files there.
    """
    if not latexmk_available():
        raise ReportError(f"latexmk/pdflatex not found; install TeX Live: {install_hint()}")
    figures = Path(figures_dir).resolve()
    source = Path(report_dir).resolve() if report_dir else Path(__file__).resolve().parents[2] / "report"
    if not (source / "main.tex").is_file():
        raise ReportError(f"{source}/main.tex not found")
    if not (figures / "macros.tex").is_file():
        raise ReportError(f"{figures}/macros.tex not found: run notebooks/05_report_figures first")
    missing = missing_files(figures, source)
    if missing:
        raise ReportError(f"{figures} lacks files the report includes: {', '.join(sorted(missing))}")
    out_pdf = Path(out_pdf).resolve()
    work = Path(work_dir).resolve() if work_dir else out_pdf.parent / "latex"
    work.mkdir(parents=True, exist_ok=True)
    out_pdf.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TEXINPUTS=f"{figures}{os.pathsep}{source}{os.pathsep}")
    command = [
        "latexmk",
        "-pdf",
        "-interaction=nonstopmode",
        "-halt-on-error",
        "-file-line-error",
        f"-output-directory={work}",
        "-jobname=report",
        "main.tex",
    ]
    if quiet:
        command.insert(1, "-silent")
    proc = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True)
    produced = work / "report.pdf"
    if proc.returncode != 0 or not produced.is_file():
        log = work / "report.log"
        tail = log.read_text(errors="replace")[-3000:] if log.is_file() else proc.stdout[-3000:]
        raise ReportError(
            f"latexmk failed (exit {proc.returncode}); end of {log}:\n{tail}\n{proc.stderr[-1000:]}"
        )
    shutil.copy2(produced, out_pdf)
    return out_pdf


def main(argv: list[str] | None = None) -> int:
    """`python -m pcnn.report --figures figures --out build/reference/report.pdf`: build from figures.

    No training and no notebook runs: the figures folder already holds every figure, table and macro
    (`make paper` builds the committed reference this way into report/pcnn_report.pdf).
    """
    parser = argparse.ArgumentParser(
        prog="python -m pcnn.report",
        description=(
            "Compile report/main.tex against a figures folder (default figures/: the committed reference "
            "run), without training. `make paper` runs: python -m pcnn.report --figures figures --out "
            "report/pcnn_report.pdf --work-dir build/paper"
        ),
    )
    parser.add_argument("--figures", default="figures", help="folder with macros.tex, tables and figures")
    parser.add_argument("--out", default="build/reference/report.pdf", help="output PDF")
    parser.add_argument(
        "--work-dir", default=None, help="LaTeX's auxiliary files (default: latex/ beside the output PDF)"
    )
    args = parser.parse_args(argv)
    try:
        pdf = build_report(args.figures, args.out, work_dir=args.work_dir, quiet=False)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {pdf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
