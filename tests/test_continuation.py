"""`python -m pcnn.reporting.continuation`: the continued-training table, from the rows' own records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcnn.reporting.continuation import continuation_tex, main, row_record


def test_a_row_names_the_epoch_of_the_checkpoint_it_measured(tmp_path: Path) -> None:
    """A run that trained on after the evaluated checkpoint: the row's epochs are the checkpoint's (as
    `pcnn evaluate` records them), not the run's last line; older evaluations fall back to that line."""
    row = fake_row(tmp_path, "run", 0.0, 0.8, 0.6)
    assert row_record(*row)["epochs"] == 20
    evaluation = Path(row[2])
    measured = json.loads(evaluation.read_text())
    evaluation.write_text(json.dumps({**measured, "checkpoint": {"epoch": 10, "step": 2340}}))
    assert (row_record(*row)["epochs"], row_record(*row)["steps"]) == (10, 2340)


def fake_row(
    root: Path, name: str, disc_weight: float, accuracy: float, judged: float, dropout: float = 0.0
) -> list[str]:
    """A run folder, its evaluation JSON and its sweep folder, as `pcnn train`, `pcnn evaluate` and the
    sweep write them (only the fields the table reads)."""
    run = root / name
    run.mkdir(parents=True)
    train = {"disc_weight": disc_weight, "disc_warmup_epochs": 5 if disc_weight else 0}
    (run / "config.json").write_text(json.dumps({"model": {"dropout": dropout}, "train": train}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 20, "step": 4680, "val_accuracy": 0.5}) + "\n")
    evaluation = root / f"{name}_eval.json"
    evaluation.write_text(
        json.dumps(
            {
                "n": 519,
                "accuracy": accuracy,
                "accuracy_ci95": [accuracy - 0.03, accuracy + 0.03],
                "macro_f1": accuracy,
                "bits_per_dim": 3.7 + disc_weight,
                "ece": 0.1,
            }
        )
    )
    sweep = root / f"{name}_sweep"
    sweep.mkdir()
    setting = {
        "n": 1000,
        "overall": judged,
        "overall_ci95": [judged - 0.03, judged + 0.03],
        "per_class": {"burger": 0.6, "panda": 0.2, "koala": 0.9, "pizza": 0.7},
        "matched_fid": {"model": 228.1, "floor": 43.5},
    }
    (sweep / "sweep.json").write_text(
        json.dumps({"judge": {"accuracy": 0.934}, "temperatures": {"1.0": setting}})
    )
    return [name, str(run), str(evaluation), str(sweep)]


def test_the_table_sets_the_hybrid_beside_its_control_and_is_rewritten_from_its_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    control = fake_row(tmp_path, "control", 0.0, 0.77, 0.63)
    hybrid = fake_row(tmp_path, "hybrid", 0.01, 0.82, 0.55)
    dropout = fake_row(tmp_path, "dropout", 0.0, 0.74, 0.60, dropout=0.1)
    halved = fake_row(tmp_path, "halved", 0.005, 0.80, 0.60)
    out = tmp_path / "continuation_wide"
    rows = ["--row", *control, "--row", *hybrid, "--row", *dropout, "--row", *halved]
    assert main(["--out", str(out), *rows]) == 0
    record = json.loads((out / "continuation.json").read_text())
    objectives = [r["objective"] for r in record["rows"]]
    assert objectives == [
        "likelihood",
        "hybrid 0.01, warm-up 5 ep.",
        "likelihood, dropout 0.1",
        "hybrid 0.005, warm-up 5 ep.",
    ]
    assert record["rows"][1]["evaluation"]["accuracy_ci95"] == pytest.approx([0.79, 0.85])
    assert record["rows"][0]["run"] == "<checkout>/control"  # no folder of this machine
    tex = (out / "continuation.tex").read_text()
    assert r"\label{tab:continuation-wide}" in tex and tex.count(r" \\") == 5  # header and four rows
    assert "the hybrid term at weight 0.01 moved validation accuracy by +5.0 points (77.0 to 82.0" in tex
    assert "the hybrid term at weight 0.005 moved validation accuracy by +3.0 points (77.0 to 80.0" in tex
    assert "judged in their class by -8.0 points" in tex and "panda 20.0" in tex
    assert "dropout 0.1 moved validation accuracy by -3.0 points (77.0 to 74.0" in tex
    (out / "continuation.tex").unlink()
    assert main(["--out", str(out)]) == 0 and (out / "continuation.tex").read_text() == tex
    assert main(["--out", str(tmp_path / "empty")]) == 2
    assert main(["--out", str(out), "--row", "x", str(tmp_path / "nowhere"), *control[2:]]) == 2
    assert "error:" in capsys.readouterr().err


def test_no_comparison_without_a_control_of_equal_epochs(tmp_path: Path) -> None:
    from pcnn.reporting.continuation import row_record

    hybrid = row_record(*fake_row(tmp_path, "hybrid", 0.01, 0.82, 0.55))
    assert "moved validation accuracy" not in continuation_tex({"rows": [hybrid]})


def _with_verdicts(sweep: Path, correct_per_class: list[int]) -> None:
    """Give a fake sweep per-sample verdicts: in class k the first `correct_per_class[k]` of 10 samples
    are judged in their class, the rest as the next class; the shares follow from them."""
    record = json.loads((sweep / "sweep.json").read_text())
    setting = record["temperatures"]["1.0"]
    predictions = [k if i < n else (k + 1) % 4 for k, n in enumerate(correct_per_class) for i in range(10)]
    names = ["burger", "panda", "koala", "pizza"]
    setting.update(
        n=40,
        samples_per_class=10,
        seed=0,
        judge_predictions=predictions,
        overall=sum(correct_per_class) / 40,
        per_class={name: n / 10 for name, n in zip(names, correct_per_class)},
    )
    record["judge"] = {"accuracy": 0.934, "seed": 0, "epochs": 30}
    (sweep / "sweep.json").write_text(json.dumps(record))


def test_a_hybrid_row_and_its_control_compare_in_pairs_through_redrawn_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The control's table sweep lacks verdicts; a re-drawn sweep of its samples (same shares) supplies
    them, and the sentence gains the paired interval. A re-drawn sweep whose shares differ is refused."""
    monkeypatch.chdir(tmp_path)
    control = fake_row(tmp_path, "control", 0.0, 0.77, 0.6)
    hybrid = fake_row(tmp_path, "hybrid", 0.01, 0.82, 0.5)
    _with_verdicts(Path(control[3]), [8, 4, 10, 8])
    redrawn = tmp_path / "control_redrawn"
    redrawn.mkdir()
    (redrawn / "sweep.json").write_text((Path(control[3]) / "sweep.json").read_text())
    _with_verdicts(Path(hybrid[3]), [6, 2, 10, 6])
    record = json.loads((Path(control[3]) / "sweep.json").read_text())
    del record["temperatures"]["1.0"]["judge_predictions"]
    (Path(control[3]) / "sweep.json").write_text(json.dumps(record))

    out = tmp_path / "paired_table"
    args = ["--out", str(out), "--row", *control, "--row", *hybrid]
    assert main([*args, "--verdicts", "control", str(redrawn)]) == 0
    rows = json.loads((out / "continuation.json").read_text())["rows"]
    assert rows[0]["samples"]["verdicts"] == "<checkout>/control_redrawn/sweep.json"
    paired = rows[1]["samples"]["paired_vs_control"]
    assert paired["difference"] == pytest.approx(-0.15) and paired["agree"] == pytest.approx(0.85)
    assert paired["difference_ci95"][1] < 0  # every discordant pair goes the control's way
    tex = (out / "continuation.tex").read_text()
    assert "judged in their class by -15.0 points [" in tex and "samples compared in pairs" in tex

    _with_verdicts(Path(control[3]), [8, 4, 10, 8])  # its own verdicts now, the re-drawn ones still named
    assert main([*args, "--verdicts", "control", str(redrawn)]) == 0
    rows = json.loads((out / "continuation.json").read_text())["rows"]
    assert rows[0]["samples"]["verdicts"] == "<checkout>/control_redrawn/sweep.json"
    record["temperatures"]["1.0"].pop("judge_predictions", None)
    (Path(control[3]) / "sweep.json").write_text(json.dumps(record))

    without = tmp_path / "unpaired_table"
    assert main(["--out", str(without), "--row", *control, "--row", *hybrid]) == 0
    assert "compared in pairs" not in (without / "continuation.tex").read_text()

    _with_verdicts(redrawn, [8, 4, 10, 7])  # not the control's samples: one verdict differs
    assert main([*args, "--verdicts", "control", str(redrawn)]) == 2
    assert "does not hold the verdicts" in capsys.readouterr().err
