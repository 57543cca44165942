"""The report: macros and tables from results JSON, and the LaTeX build against a pipeline's figures."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from pcnn.evaluation.metrics import wilson_interval
from pcnn.reporting import report
from pcnn.reporting.plots import hybrid_start, read_sample_grids
from pcnn.sampling.sample import sample_grid_figure

from ._pipeline import tiny_pipeline

REPORT_DIR = Path(__file__).resolve().parent.parent / "report"
FIGURES_DIR = REPORT_DIR.parent / "figures"
PAPER = REPORT_DIR / "pcnn_report.pdf"  # `make paper`: the committed reference build's report


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


def test_the_sampling_temperature_and_its_choice_reach_the_text() -> None:
    assert report.report_macros({})["SampleTemperature"] == "1", "records before the choice sampled at 1"
    assert report.report_macros({})["SampleTemperatureChoice"] == "the model as trained"
    choice = {
        "chosen": 0.95,
        "candidates": {"1.0": {"fid": 148.46, "kid": 0.1}, "0.95": {"fid": 145.0, "kid": 0.1}},
        "seed": 0,
        "n_samples": 1000,
        "note": None,
    }
    macros = report.report_macros({"sampling": {"temperature": choice}})
    assert macros["SampleTemperature"] == "0.95"
    text = macros["SampleTemperatureChoice"]
    assert "$T = 1$: 148.5, $T = 0.95$: 145.0" in text and "1000 samples at seed 0" in text
    assert "departs from the original report" in macros["SampleTemperatureDeparture"]
    judged = {"checks": {"class_consistency": {"overall": 0.627, "overall_ci95": [0.598, 0.658]}}}
    assert report.report_macros({"sampling": judged})["JudgeShare"] == "62.7"
    assert report.report_macros({"sampling": judged})["JudgeShareCI"] == "[59.8, 65.8]"
    assert report.report_macros({})["SampleTemperatureDeparture"] == ""
    unchosen = {**choice, "chosen": 1.0, "candidates": {}, "note": "not chosen (no Inception weights)"}
    assert report.report_macros({"sampling": {"temperature": unchosen}})["SampleTemperatureChoice"] == (
        "not chosen (no Inception weights)"
    )


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


def test_wilson_interval_matches_known_values_and_refuses_bad_counts() -> None:
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(250, 250) == pytest.approx((0.9849, 1.0), abs=1e-4)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    for hits, n in ((1, 0), (-1, 5), (6, 5)):
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(hits, n)


def test_judge_per_class_puts_the_samples_share_beside_the_judges_recall() -> None:
    consistency = {
        "per_class": {"burger": 0.012, "panda": 0.0, "koala": 0.188, "pizza": None},
        "per_class_n": {"burger": 250, "panda": 250, "koala": 250, "pizza": 0},
    }
    baseline = {"confusion_matrix": [[123, 0, 3, 4], [0, 113, 17, 0], [2, 1, 126, 0], [24, 1, 3, 102]]}
    rows = report.judge_per_class(consistency, baseline)
    assert list(rows) == ["burger", "panda", "koala", "pizza"]
    assert rows["burger"]["samples_share"] == pytest.approx(3 / 250) and rows["burger"]["samples_n"] == 250
    assert rows["panda"]["samples_ci95"][0] == 0.0 < rows["panda"]["samples_ci95"][1]
    assert rows["koala"]["real_share"] == pytest.approx(126 / 129) and rows["koala"]["real_n"] == 129
    assert rows["pizza"]["samples_share"] is None and rows["pizza"]["samples_ci95"] is None
    lo, hi = rows["pizza"]["real_ci95"]
    assert lo < 102 / 130 < hi


def test_hybrid_start_marks_the_switch_only_when_it_happens_late() -> None:
    metrics = [
        {"epoch": 5, "step": 50, "disc_weight": 0.0},
        {"epoch": 10, "step": 100, "disc_weight": 0.0},
        {"epoch": 15, "step": 150, "disc_weight": 0.01},
    ]
    assert hybrid_start(metrics) == (100.0, 11)
    assert hybrid_start(metrics, start_epoch=12) == (120.0, 13)
    assert hybrid_start([{**m, "disc_weight": 0.01} for m in metrics]) is None
    assert hybrid_start([{"epoch": 1, "step": 9, "lr": 1e-3}]) is None


def _uint8(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def test_generative_figures_render_from_their_results(tmp_path: Path) -> None:
    """Each new figure from the files notebook 04 writes; a run without sample grids gets a note."""
    results_dir, figures = tmp_path / "results", tmp_path / "figures"
    results_dir.mkdir()
    np.savez_compressed(
        results_dir / "completions.npz",
        originals=_uint8(4, 8, 8, 3),
        completions=_uint8(4, 3, 8, 8, 3),
        other=_uint8(4, 8, 8, 3),
        labels=np.arange(4),
        other_labels=(np.arange(4) + 1) % 4,
        rows=4,
    )
    np.savez_compressed(
        results_dir / "samples_temperatures.npz",
        images=_uint8(4, 3, 2, 8, 8, 3),
        temperatures=[1.0, 0.9, 0.8],
    )
    np.savez_compressed(
        results_dir / "real_vs_generated.npz", real=_uint8(4, 3, 8, 8, 3), generated=_uint8(4, 3, 8, 8, 3)
    )
    run_samples = tmp_path / "run" / "samples"
    for epoch in (2, 4, 6):  # named as pcnn.workflow.runrecord names them, drawn as training draws them
        labels = torch.arange(4).repeat_interleave(2)
        sample_grid_figure(
            torch.rand(8, 3, 8, 8) * 2 - 1, labels, report.CLASS_NAMES, run_samples / f"epoch_{epoch:04d}.png"
        )
    epochs, grids = read_sample_grids(run_samples)
    assert epochs == [2, 4, 6] and grids.dtype == np.uint8 and grids.shape[0] == 3 and grids.shape[-1] == 3
    np.savez_compressed(results_dir / "training_samples.npz", grids=grids, epochs=epochs)
    consistency = {
        "per_class": dict.fromkeys(report.CLASS_NAMES, 0.5),
        "per_class_n": dict.fromkeys(report.CLASS_NAMES, 4),
    }
    judged = report.judge_per_class(
        consistency, {"confusion_matrix": (np.eye(4, dtype=int) * 5 + 1).tolist()}
    )
    results = {"meta": {"profile": "smoke"}, "sampling": {"checks": {"judge_per_class": judged}}}
    for stem in report.LATER_FIGURES:
        fig, paths = report.render_figure(stem, results, results_dir, figures)
        assert all(path.stat().st_size > 0 for path in paths), stem
    assert len(report.render_figure("samples_over_training", results, results_dir, figures)[0].axes) == 3
    empty = read_sample_grids(tmp_path / "no_run")
    assert empty[0] == [] and empty[1].shape == (0, 1, 1, 3)
    np.savez_compressed(results_dir / "training_samples.npz", grids=empty[1], epochs=np.array(empty[0]))
    fig, _ = report.render_figure("samples_over_training", results, results_dir, figures)
    assert "saved no sample grids" in fig.axes[0].texts[0].get_text()
    with pytest.raises(FileNotFoundError, match="judge_per_class"):
        report.render_figure("judge_per_class", {"meta": {}}, results_dir, figures)
    (results_dir / "completions.npz").unlink()
    with pytest.raises(FileNotFoundError, match="completions.npz"):
        report.render_figure("completions", results, results_dir, figures)


def test_a_figures_folder_without_the_later_figures_still_builds(tmp_path: Path) -> None:
    """The committed reference build predates LATER_FIGURES: the report requires them of new builds only."""
    included = report.included_files(REPORT_DIR)
    assert set(report.LATER_FIGURES) <= set(included)
    assert set(report.LATER_FIGURES) <= set(report.REPORT_FIGURES)
    assert report.missing_files(FIGURES_DIR, REPORT_DIR) == []
    (tmp_path / "macros.tex").write_text("")
    missing = report.missing_files(tmp_path, REPORT_DIR)
    assert "training_curves.pdf" in missing and not set(report.LATER_FIGURES) & set(missing)
    assert "is not in this build" in (REPORT_DIR / "main.tex").read_text()


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


def test_original_report_is_quoted_beside_this_builds_measured_numbers() -> None:
    results = {
        "meta": {"profile": "cpu", "data_source": "course"},
        "training": {
            "config": {"name": "cpu", "model": {"nr_filters": 40, "nr_logistic_mix": 10}},
            "epochs": 11,
            "wall_time_s": 3600.0,
            "device": "cpu",
            "validation": {"accuracy": 0.803, "accuracy_ci95": [0.769, 0.838], "macro_f1": 0.802},
        },
        "sampling": {
            "fid": {
                "available": True,
                "course": {
                    "model": {"mean": 17.5, "std": 0.03, "n": 3, "n_samples": 100, "dims": 192},
                    "floor": {"mean": 31.7, "std": 0.3, "n": 5},
                },
            }
        },
    }
    table = report.original_table(results)
    assert "original report (quoted, not measured here)" in table and "this build (measured)" in table
    assert "full model & nf 128, mix 100 & 801 epochs, GPU & test & 88.9 & 0.89 & 21.3" in table
    assert "reduced model & nf 40, mix 10 & 200 epochs, GPU & validation & 74.1 & -- & 37.6" in table
    assert "reduced model & nf 40, mix 10 & 350 epochs, GPU & validation & 81.2 & -- & 28.7" in table
    assert r"80.3 [76.9, 83.8] & 0.80 & 17.5 $\pm$ 0.0" in table and "60 min, cpu" in table
    macros = report.report_macros(results)
    full = (macros["OrigFullAccuracy"], macros["OrigFullFOne"], macros["OrigFullFid"])
    assert full == ("88.9", "0.89", "21.3")
    assert (macros["OrigReducedShortEpochs"], macros["OrigReducedLongAccuracy"]) == ("200", "81.2")
    text = report.macros_tex(results)
    assert r"\FidCourseBelowFloortrue" in text, "17.5 under a floor of 31.7: the protocol cannot rank samples"
    assert r"\SubmissionWrittenfalse" in text and r"\HybridObjectivefalse" in text


def test_conditionals_follow_the_results() -> None:
    above = {"fid": {"course": {"model": {"mean": 40.0}, "floor": {"mean": 31.7}}}}
    assert not report.fid_course_below_floor(above) and not report.fid_course_below_floor({})
    results = {
        "sampling": above,
        "training": {
            "submission": "<build>/runs/results/test/submission.csv",
            "config": {"train": {"disc_weight": 0.01}},
        },
    }
    text = report.macros_tex(results)
    assert r"\FidCourseBelowFloorfalse" in text and r"\HybridObjectivetrue" in text
    assert r"\SubmissionWrittentrue" in text
    assert report.report_macros(results)["SubmissionFile"] == "<build>/runs/results/test/submission.csv"


def test_committed_tables_and_macros_are_generated_from_the_committed_results() -> None:
    results = json.loads((FIGURES_DIR / "results.json").read_text())
    assert (FIGURES_DIR / "macros.tex").read_text() == report.macros_tex(results)
    assert (FIGURES_DIR / "table_original.tex").read_text() == report.original_table(results)


def _pdf_text(pdf: Path) -> str | None:
    """The PDF's text (pdftotext, poppler-utils), or None where that tool is not installed."""
    if shutil.which("pdftotext") is None:
        return None
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split())


def _check_paper_text(text: str) -> None:
    assert "Our model beside the original report" in text
    assert "88.9" in text and "21.3" in text and "74.1" in text and "81.2" in text
    assert "cannot rank sample quality" in text and "matched protocol" in text
    assert "submission.csv" in text and "id,label" in text
    assert "pcnn evaluate --checkpoint checkpoints/reference.pt --split test" in text


def test_committed_paper_is_there_and_says_what_the_issue_asks() -> None:
    assert PAPER.is_file(), "report/pcnn_report.pdf is missing: run `make paper`"
    assert PAPER.read_bytes()[:5] == b"%PDF-"
    text = _pdf_text(PAPER)
    if text is None:
        pytest.skip("pdftotext (poppler-utils) not installed: the PDF's text is not checked")
    _check_paper_text(text)
    assert "CPEN455 course project report" in text and "not a NeurIPS submission" in text


@pytest.mark.slow
def test_paper_builds_from_the_committed_figures_without_training(tmp_path: Path) -> None:
    """What `make paper` runs: `python -m pcnn.report --figures figures` (no notebook, no training)."""
    if not report.latexmk_available():
        pytest.skip(f"latexmk/pdflatex not installed: {report.install_hint()}")
    out = tmp_path / "paper" / "pcnn_report.pdf"
    work = tmp_path / "latex-work"
    assert report.main(["--figures", str(FIGURES_DIR), "--out", str(out), "--work-dir", str(work)]) == 0
    assert out.read_bytes()[:5] == b"%PDF-" and not (out.parent / "latex").exists()
    assert b"/PTEX.FileName" not in out.read_bytes(), "the PDF names no folder of the building machine"
    text = _pdf_text(out)
    if text is None:
        source = (REPORT_DIR / "main.tex").read_text()
        assert "cannot rank sample quality" in source and r"\input{table_original}" in source
        return
    _check_paper_text(text)


def test_p_values_read_as_latex() -> None:
    from pcnn.reporting.report import fmt_p

    assert fmt_p(0.12) == "$p = 0.12$" and fmt_p(0.0049) == "$p = 0.0049$"
    assert fmt_p(1.92e-9) == r"$p = 1.9\times10^{-9}$"
