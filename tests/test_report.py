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


def test_checks_table_prints_every_measured_check_and_says_when_none_was() -> None:
    training = {
        "tta_prior": [
            {
                "setting": "plain",
                "accuracy": 0.8,
                "accuracy_ci95": [0.76, 0.84],
                "macro_f1": 0.79,
                "changed_vs_plain": 0,
            },
            {
                "setting": "tta",
                "accuracy": 0.82,
                "accuracy_ci95": [0.78, 0.85],
                "macro_f1": 0.81,
                "changed_vs_plain": 12,
            },
        ]
    }
    sampling = {
        "fid": {"matched": {"per_class": {"panda": {"model": 95.04, "floor": 61.2}}}},
        "checks": {
            "baseline": {
                "accuracy": 0.9,
                "accuracy_ci95": [0.87, 0.92],
                "macro_f1": 0.9,
                "epochs": 30.0,
                "train_seconds": 300.0,
            },
            "class_consistency": {
                "overall": 0.5,
                "overall_ci95": [0.45, 0.55],
                "n": 1000,
                "per_class": {"burger": 0.4},
            },
            "nearest_neighbour_distance": {"mean": 20.0, "min": 12.5, "n_samples": 8, "n_train": 100},
        },
    }
    table = report.checks_table(training, sampling)
    assert "Bayes rule, tta & 82.0 [78.0, 85.0] & macro F1 0.810; 12 predictions changed" in table
    assert "baseline CNN (discriminative) & 90.0 [87.0, 92.0]" in table and "5.0 min" in table
    assert "FID of panda samples (matched, per class) & 95.0 & real-data floor 61.2" in table
    assert "burger 40" in table and "minimum 12.5 over 8 samples" in table
    assert "not measured in this build" in report.checks_table({}, {})
    assert report.report_macros(
        {"training": {"config": {"train": {"disc_weight": 0.01, "disc_fraction": 0.25}}}}
    )["TrainObjective"].startswith("the hybrid objective")


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
