"""`python -m pcnn.temperature_sweep`: a judged record per temperature and guidance, from training data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pcnn.datasets import make_synthetic
from pcnn.evaluation.paired import main as paired_main
from pcnn.evaluation.temperature_sweep import main
from pcnn.reporting.levers import levers_tex
from pcnn.reporting.levers import main as levers_main
from pcnn.training.checkpoint import model_state, save_checkpoint
from tests.conftest import tiny_model


def test_the_sweep_judges_every_temperature_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_synthetic(tmp_path / "data", seed=0, counts={"train": 8, "validation": 4, "test": 4})
    model = tiny_model()
    checkpoint = save_checkpoint(
        tmp_path / "m.pt", {"model_config": dataclasses.asdict(model.config), "model": model_state(model)}
    )
    out = tmp_path / "sweep"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--data-dir", str(data), "--per-class", "2"]
    judge = ["--judge-minutes", "0.02", "--judge-seeds", "0", "1"]
    assert main([*argv, "--temperatures", "1.0", "0.5", "--guidance", "0", "2", *judge]) == 0
    record = json.loads((out / "sweep.json").read_text())
    assert list(record["temperatures"]) == ["1.0", "1.0_w2", "0.5", "0.5_w2"]
    for judged in record["temperatures"].values():
        assert judged["n"] == 8 and 0.0 <= judged["overall"] <= 1.0 and len(judged["per_class"]) == 4
        labels = [k for k in range(4) for _ in range(2)]
        hits = [p == label for p, label in zip(judged["judge_predictions"], labels)]
        assert sum(hits) / 8 == judged["overall"], "each sample's verdict, for paired comparisons"
    assert paired_main([str(out / "sweep.json"), str(out / "sweep.json"), "--setting-b", "0.5"]) == 0
    assert record["temperatures"]["0.5_w2"]["guidance"] == 2.0
    assert record["judge"]["epochs_requested"] == 30 and record["judge"]["max_minutes"] == 0.02
    for judged in record["temperatures"].values():  # the model's own Bayes classifier judges them too
        assert judged["own_classifier"]["n"] == 8 and "matched_fid" not in judged
        assert (
            len(judged["judge_seeds"]["overall"]) == 2
            and len(judged["judge_seeds"]["per_class"]["koala"]) == 2
        )
    assert [j["seed"] for j in record["judges"]] == [0, 1]
    for name in ("T1", "T0.5", "T1_w2", "T0.5_w2"):
        assert (out / f"samples_{name}.png").is_file()
    assert str(tmp_path) not in (out / "sweep.json").read_text()  # no machine path in the record
    section = (out / "levers.tex").read_text()  # the report's section, from the record
    assert r"\label{tab:levers-sweep}" in section and "{sweep/samples_T0.5_w2.png}" in section
    assert "Against $T = 1$" in section and "$T = 0.5$" in section and "paired 95" in section
    assert r"(\texttt{python -m pcnn.paired})" in section and "The judged share is highest at" in section
    assert "At $w = 2$ the first judge puts" in section  # the last guided row beside its unguided one
    (out / "levers.tex").unlink()  # written again from the record alone
    assert levers_main([str(out)]) == 0 and (out / "levers.tex").read_text() == section
    assert levers_main([str(tmp_path)]) == 2
    assert section.count(r" \\") == 5 and all(
        name in section for name in ("burger", "panda", "koala", "pizza")
    )
    assert main([*argv, "--temperatures", "0"]) == 2
    assert main([*argv, "--guidance", "-1"]) == 2
    assert main([*argv[:-4], "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


def test_a_temperature_only_section_shows_the_lowest_fid_and_says_pairs_are_missing() -> None:
    def setting(t: float, fid: float) -> dict:
        return {
            "n": 8,
            "overall": 0.5,
            "overall_ci95": [0.2, 0.8],
            "temperature": t,
            "guidance": 0.0,
            "per_class": {"burger": 0.5, "panda": 0.5},
            "samples_per_class": 4,
            "seed": 0,
            "matched_fid": {"model": fid, "floor": 40.0},
        }

    record = {
        "checkpoint": "m.pt",
        "seed": 0,
        "judge": {"accuracy": 0.9},
        "temperatures": {"1.0": setting(1.0, 170.0), "0.9": setting(0.9, 150.0), "0.8": setting(0.8, 160.0)},
    }
    section = levers_tex(record, "wide_levers")
    assert "{wide_levers/samples_T0.9.png}" in section and r"\label{fig:levers-wide_levers}" in section
    assert "matched FID 150.0" in section and "paired" not in section, "records without verdicts: no pairs"
    assert (
        "the matched FID lowest at $T = 0.9$" in section
        and r"judge puts in their class (90.0\pct{}" in section
    )
