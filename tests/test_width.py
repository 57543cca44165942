"""`python -m pcnn.reporting.width`: runs of different widths compared at equal epochs, from their records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pcnn.reporting.width import (
    distinct_trajectories,
    equal_epoch,
    main,
    parameter_count,
    width_row,
    width_tex,
)
from tests.test_continuation import fake_row

TINY = {"nr_resnet": 1, "nr_logistic_mix": 2, "num_classes": 4, "image_size": 8, "dropout": 0.0}


def width_run(
    root: Path, name: str, filters: int, bpd: dict[int, float], judged: float, resnets: int = 1
) -> list[str]:
    """A run of `filters` filters whose validation bits/dim per epoch are `bpd` (accuracy 0.5 + bpd/100)."""
    row = fake_row(root, name, 0.0, 0.77, judged)
    run = Path(row[1])
    model = {**TINY, "nr_filters": filters, "nr_resnet": resnets}
    (run / "config.json").write_text(json.dumps({"model": model, "train": {"disc_weight": 0.0, "lr": 4e-4}}))
    lines = [
        {"epoch": e, "step": 100 * e, "val_bits_per_dim": b, "val_accuracy": 0.5 + b / 100}
        for e, b in bpd.items()
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return row


def test_the_wider_run_is_compared_at_the_last_epoch_both_evaluated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = width_run(tmp_path, "base", 4, {5: 4.5, 10: 4.1, 15: 4.0, 20: 3.9}, judged=0.6)
    wide = width_run(tmp_path, "wide", 8, {5: 4.3, 10: 3.95}, judged=0.7)
    out = tmp_path / "width"
    assert main(["--out", str(out), "--row", *base, "--row", *wide]) == 0
    record = json.loads((out / "width.json").read_text())
    assert [r["filters"] for r in record["rows"]] == [4, 8]
    assert record["rows"][1]["parameters"] > record["rows"][0]["parameters"]
    assert record["equal_epoch"]["epoch"] == 10
    assert [p["bits_per_dim"] for p in record["equal_epoch"]["points"]] == [4.1, 3.95]
    tex = (out / "width.tex").read_text()
    assert r"\label{tab:width}" in tex and "width/width_curves.pdf" in tex
    assert "After 10 epochs, 8 filters reach 3.950 bits/dim" in tex and "4 filters reach 4.100" in tex
    assert (out / "width_curves.pdf").is_file() and (out / "width_curves.png").is_file()
    (out / "width.tex").unlink()
    assert main(["--out", str(out)]) == 0 and (out / "width.tex").read_text() == tex
    assert main(["--out", str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err


def test_runs_without_a_shared_epoch_get_no_comparison(tmp_path: Path) -> None:
    rows = [
        width_row(*width_run(tmp_path, "a", 4, {5: 4.5}, judged=0.6)),
        width_row(*width_run(tmp_path, "b", 8, {10: 4.0}, judged=0.6)),
    ]
    assert equal_epoch(rows) is None
    assert "After" not in width_tex({"rows": rows, "equal_epoch": None})


def test_parameter_count_grows_with_the_filters() -> None:
    counts = [parameter_count({**TINY, "nr_filters": f}) for f in (4, 8)]
    assert 0 < counts[0] < counts[1]


def test_two_rows_of_one_width_get_one_equal_epoch_clause(tmp_path: Path) -> None:
    """The same run after 10 and after 20 epochs: its curve point at the shared epoch is named once, each
    row's samples (with their FID) are named."""
    base = width_row(*width_run(tmp_path, "base", 4, {5: 4.5, 10: 4.1}, judged=0.6))
    early = width_row(*width_run(tmp_path, "early", 8, {5: 4.3, 10: 3.95}, judged=0.7))
    late = width_row(*width_run(tmp_path, "late", 8, {5: 4.3, 10: 3.95, 15: 3.8}, judged=0.65))
    rows = [base, early, late]
    tex = width_tex({"rows": rows, "equal_epoch": equal_epoch(rows)})
    assert tex.count("8 filters reach 3.950 bits/dim") == 1
    assert "where 4 filters reach 4.100" in tex
    assert "70.0\\pct{} (matched FID 228.1)" in tex and "65.0\\pct{} (matched FID 228.1)" in tex
    assert "judged by the same baseline CNN (93.4\\pct{} on validation)" in tex


def test_rows_judged_by_different_judges_say_so(tmp_path: Path) -> None:
    """A judge retrained on another machine is another judge: the paragraph names both and the table
    gives each row's."""
    rows = [
        width_row(*width_run(tmp_path, "a", 4, {5: 4.5}, judged=0.6)),
        width_row(*width_run(tmp_path, "b", 8, {5: 4.0}, judged=0.6)),
    ]
    rows[1]["samples"]["judge_accuracy"] = 0.938
    tex = width_tex({"rows": rows, "equal_epoch": equal_epoch(rows)})
    assert "different machines (93.4, 93.8\\pct{} on validation" in tex
    assert tex.count(r" & 93.8 \\") == 1 and tex.count(r" & 93.4 \\") == 1


def test_a_run_stopped_early_joins_by_its_curve_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with no judged checkpoint is in the figure and the paragraph, beside the table's runs at its
    last epoch, not in the table; its learning rate is named; the record rewrites alike."""
    monkeypatch.chdir(tmp_path)
    base = width_run(tmp_path, "base", 4, {5: 4.5, 10: 4.1, 15: 4.0}, judged=0.6)
    wide = width_run(tmp_path, "wide", 8, {5: 4.3, 10: 3.95, 15: 3.9}, judged=0.7)
    early = width_run(tmp_path, "early", 16, {5: 4.2, 10: 3.99}, judged=0.0)
    config = json.loads((Path(early[1]) / "config.json").read_text())
    config["train"]["lr"] = 2.5e-4
    (Path(early[1]) / "config.json").write_text(json.dumps(config))
    out = tmp_path / "width"
    assert main(["--out", str(out), "--row", *base, "--row", *wide, "--curve", "sixteen", early[1]]) == 0
    record = json.loads((out / "width.json").read_text())
    assert [c["filters"] for c in record["curves"]] == [16] and record["equal_epoch"]["epoch"] == 15
    tex = (out / "width.tex").read_text()
    assert r"sixteen (16 filters, 0.15M parameters, learning rate $2.5\times10^{-4}$, stopped" in tex
    assert "Model width." in tex and "resnet block" not in tex
    assert "reaches 3.990 bits/dim and 54.0\\pct{} accuracy after 10 epochs, where" in tex
    assert "where 4 filters reach 4.100 bits/dim" in tex and "8 filters reach 3.950 bits/dim" in tex
    assert tex.count(r" \\") == 3  # the header and the two table rows
    (out / "width.tex").unlink()
    assert main(["--out", str(out)]) == 0 and (out / "width.tex").read_text() == tex


def test_a_deeper_run_is_named_by_its_depth_and_joins_an_existing_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--curve` without `--row` adds a run to the folder's record; a run with more resnet blocks per stage
    than the baseline is named by its depth in the paragraph, the legend and the title."""
    monkeypatch.chdir(tmp_path)
    base = width_run(tmp_path, "base", 4, {5: 4.5, 10: 4.1}, judged=0.6)
    wide = width_run(tmp_path, "wide", 8, {5: 4.3, 10: 3.95}, judged=0.7)
    deep = width_run(tmp_path, "deep", 8, {5: 4.2, 10: 3.9}, judged=0.0, resnets=2)
    out = tmp_path / "width"
    assert main(["--out", str(out), "--row", *base, "--row", *wide]) == 0
    plain = (out / "width.tex").read_text()
    assert main(["--out", str(out)]) == 0 and (out / "width.tex").read_text() == plain
    assert main(["--out", str(out), "--curve", "deeper", deep[1]]) == 0
    record = json.loads((out / "width.json").read_text())
    assert [r["resnets"] for r in record["rows"]] == [1, 1] and record["curves"][0]["resnets"] == 2
    assert record["curves"][0]["parameters"] > record["rows"][1]["parameters"]
    tex = (out / "width.tex").read_text()
    assert r"\paragraph{Model width and depth.} A network of 4 filters and 1 resnet block per stage" in tex
    assert "deeper (8 filters and 2 resnet blocks per stage, " in tex
    assert (
        "reaches 3.900 bits/dim and 53.9\\pct{} accuracy after 10 epochs, where 4 filters reach 4.100" in tex
    )
    assert "8 filters reach 3.950" in tex
    assert main(["--out", str(out)]) == 0 and (out / "width.tex").read_text() == tex
    record["curves"][0]["label"] = "8 filters and 2 resnet blocks per stage"
    assert "per stage (0." in width_tex(record), "a label that names its network is not followed by it again"


def test_the_figure_draws_one_curve_per_training_trajectory() -> None:
    # A run judged after 30 and after 60 epochs gives two rows; a copy of its first 30 epochs gives a third.
    early = {
        "label": "after 30",
        "curve": [{"epoch": 5, "bits_per_dim": 4.1}, {"epoch": 10, "bits_per_dim": 4.0}],
    }
    full = {"label": "after 60", "curve": [*early["curve"], {"epoch": 15, "bits_per_dim": 3.9}]}
    same_length = {"label": "same run, later row", "curve": list(full["curve"])}
    other = {
        "label": "other",
        "curve": [{"epoch": 5, "bits_per_dim": 4.1}, {"epoch": 10, "bits_per_dim": 3.8}],
    }
    runs = [early, full, same_length, other]
    assert [run["label"] for run in distinct_trajectories(runs)] == ["same run, later row", "other"]
