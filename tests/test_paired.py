"""`python -m pcnn.paired`: two judgements of samples drawn from the same random numbers, in pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcnn.evaluation.metrics import bootstrap_accuracy_ci
from pcnn.evaluation.paired import (
    PairingError,
    compare_sweeps,
    main,
    mcnemar_exact_p,
    paired_difference,
    setting_verdicts,
)


def test_mcnemar_exact_p_is_the_two_sided_binomial_tail() -> None:
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 2**10)
    assert mcnemar_exact_p(10, 0) == mcnemar_exact_p(0, 10)
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 2**10)


def test_pairs_separate_a_difference_that_two_intervals_cannot() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(1000) < 0.6
    a = b.copy()
    flipped = rng.choice(np.flatnonzero(~b), size=40, replace=False)  # A gets 40 more right, loses none
    a[flipped] = True
    result = paired_difference(a, b)
    assert result["difference"] == pytest.approx(0.04) and result["a_only"] == 40 and result["b_only"] == 0
    low, high = result["difference_ci95"]
    assert 0 < low < 0.04 < high
    labels = np.ones(1000, dtype=int)
    a_low, _ = bootstrap_accuracy_ci(labels, a.astype(int))
    _, b_high = bootstrap_accuracy_ci(labels, b.astype(int))
    assert a_low < b_high, "each share's own interval overlaps the other's"
    assert result["mcnemar_p"] < 1e-9 and result["agree"] == pytest.approx(0.96)
    same = paired_difference(b, b)
    assert same["difference"] == 0 and same["difference_ci95"] == [0.0, 0.0] and same["mcnemar_p"] == 1.0
    with pytest.raises(PairingError):
        paired_difference(a, b[:10])


def _record(predictions: list[int], *, per_class: int, seed: int = 0, judge_seed: int = 0) -> dict:
    entry = {"samples_per_class": per_class, "seed": seed, "judge_predictions": predictions}
    return {"judge": {"seed": judge_seed, "epochs": 30.0, "accuracy": 0.9}, "temperatures": {"1.0": entry}}


def test_sweeps_compare_per_class_and_refuse_what_is_not_paired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _record([0, 0, 1, 1, 2, 2, 3, 3], per_class=2)
    b = _record([0, 1, 1, 0, 2, 0, 3, 3], per_class=2)
    assert setting_verdicts(b, "1.0").tolist() == [True, False, True, False, True, False, True, True]
    result = compare_sweeps(a, b)
    assert result["difference"] == pytest.approx(3 / 8) and result["per_class"]["pizza"]["difference"] == 0
    assert result["per_class"]["panda"]["difference"] == pytest.approx(0.5)
    with pytest.raises(PairingError, match="seed"):
        compare_sweeps(a, _record([0] * 8, per_class=2, seed=1))
    with pytest.raises(PairingError, match="judges"):
        compare_sweeps(a, _record([0] * 8, per_class=2, judge_seed=1))
    with pytest.raises(PairingError, match="no setting"):
        compare_sweeps(a, b, "0.9")
    old = _record([0] * 8, per_class=2)
    del old["temperatures"]["1.0"]["judge_predictions"]
    with pytest.raises(PairingError, match="per-sample verdicts"):
        compare_sweeps(a, old)
    paths = []
    for name, record in (("a", a), ("b", b), ("old", old)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(record))
    out = tmp_path / "cmp" / "paired.json"
    assert main([str(paths[0]), str(paths[1]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "+37.5 points" in printed and "panda" in printed and "McNemar" in printed
    assert json.loads(out.read_text())["b_only"] == 0
    assert main([str(paths[0]), str(paths[2])]) == 2
    assert main([str(paths[0]), str(tmp_path / "missing.json")]) == 2
    assert "error:" in capsys.readouterr().err
