"""The report: macros and tables from results JSON, and the LaTeX build against a pipeline's figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pcnn import report

from ._pipeline import tiny_pipeline

REPORT_DIR = Path(__file__).resolve().parent.parent / "report"


def test_macros_of_empty_results_say_not_available() -> None:
    macros = report.report_macros({"meta": {"profile": "cpu"}})
    assert all(re.fullmatch(r"[A-Za-z]+", name) for name in macros)
    assert macros["ValAccuracy"] == "n/a" and macros["ReportProfile"] == "cpu"
    text = report.macros_tex({"meta": {"profile": "cpu"}})
    assert r"\SmokeBuildfalse" in text and text.count(r"\newcommand") == len(macros)


def test_fid_without_inception_weights_is_never_a_number() -> None:
    results = {
        "meta": {"profile": "smoke", "data_source": "synthetic"},
        "sampling": {"fid": {"available": False, "note": "not measured (no Inception weights): x"}},
    }
    macros = report.report_macros(results)
    assert macros["FidCourse"] == report.NOT_MEASURED_FID == macros["FidMatchedFloor"]
    assert report.NOT_MEASURED_FID in report.fid_table(results["sampling"])
    assert all(e["mean"] is None for e in report.fid_entries(results["sampling"]))
    text = report.macros_tex(results)
    assert r"\SmokeBuildtrue" in text and r"\SyntheticDatatrue" in text and r"\FidMeasuredfalse" in text


def test_numbers_are_formatted_from_the_results() -> None:
    results = {
        "meta": {"profile": "cpu", "data_source": "course"},
        "training": {
            "validation": {"accuracy": 0.8123, "accuracy_ci95": [0.78, 0.845], "n": 519},
            "config": {"model": {"nr_resnet": 1}, "train": {"lr": 0.0002}},
        },
        "sampling": {"fid": {"available": True, "course": {"model": {"mean": 28.71, "std": 1.26, "n": 3}}}},
    }
    macros = report.report_macros(results)
    assert macros["ValAccuracy"] == "81.2" and macros["ValAccuracyCI"] == "[78.0, 84.5]"
    assert macros["FidCourse"] == r"28.7 $\pm$ 1.3" and macros["NrResnetDown"] == "2"
    assert macros["LearningRate"] == r"$2\times10^{-4}$"
    assert report.tex_escape("gated_bias+polyak 50%") == r"gated\_bias+polyak 50\%"


def test_ablation_table_marks_the_unconditional_variant_na() -> None:
    rows = [
        {
            "name": "none",
            "val_accuracy": None,
            "val_accuracy_ci": None,
            "val_f1": None,
            "val_bpd": 4.1,
            "fid_course_mean": None,
            "fid_course_std": None,
            "budget": "24 steps",
            "fid_note": "not measured",
        },
        {
            "name": "gated-bias",
            "val_accuracy": 0.75,
            "val_accuracy_ci": [0.7, 0.8],
            "val_f1": 0.74,
            "val_bpd": 4.0,
            "fid_course_mean": 30.0,
            "fid_course_std": 2.0,
            "budget": "24 steps",
        },
    ]
    table = report.ablation_table(rows)
    assert "none & n/a & n/a & 4.100 & --" in table
    assert r"gated-bias & 75.0 [70.0, 80.0] & 0.740 & 4.000 & 30.0 $\pm$ 2.0" in table


def test_report_sources_include_only_generated_files() -> None:
    included = report.included_files(REPORT_DIR)
    figures = {name.removesuffix(".pdf") for name, kind in included.items() if kind == "figure"}
    inputs = {name for name, kind in included.items() if kind == "input"}
    assert figures == set(report.REPORT_FIGURES)
    assert inputs == {"macros", *report.TABLES}


@pytest.mark.slow
def test_report_builds_from_the_pipeline_figures(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not report.latexmk_available():
        pytest.skip(f"latexmk/pdflatex not installed: {report.install_hint()}")
    build = tiny_pipeline(tmp_path_factory.mktemp("pipeline"))
    figures = Path(build["figures"])
    manifest = json.loads((figures / "manifest.json").read_text())["files"]
    for name in report.included_files(REPORT_DIR):
        produced = [n for n in (name, f"{name}.tex", f"{name}.pdf") if n in manifest]
        assert produced, f"{name} is included by the report but was not written by this run"
        assert (figures / produced[0]).stat().st_mtime >= build["started_at"] - 1
    pdf = report.build_report(figures, Path(build["build"]) / "report.pdf", report_dir=REPORT_DIR)
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 50_000
