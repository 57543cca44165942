"""`python -m pcnn.paired`: the difference of two judged shares, with samples compared in pairs.

Two sweeps drawn with the same sampling seed (`python -m pcnn.temperature_sweep --seed S`) give the i-th
sample of each class from the same random numbers: one model at two temperatures, or two continuations
of one checkpoint, then draw closely related images, and the judge's verdicts on them agree far more
often than two independent draws would. Resampling the samples in pairs (a paired bootstrap) therefore
separates differences that two overlapping intervals, one per sweep, cannot. McNemar's exact test on
the discordant pairs says the same in one p-value. The pairing needs each sample's verdict, which the
sweeps record as `judge_predictions` (records before this module lack it and are refused).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pcnn.datasets import CLASS_NAMES
from pcnn.evaluation.metrics import bootstrap_mean_ci


class PairingError(ValueError):
    """Two judgements that cannot be compared sample by sample."""


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs against a fair coin."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a_only, b_only) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_difference(
    correct_a: np.ndarray, correct_b: np.ndarray, *, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Share judged correct of A minus that of B, with a paired percentile-bootstrap interval.

    `correct_a[i]` and `correct_b[i]` are the verdicts on the i-th sample of each judgement, drawn from
    the same random numbers; the bootstrap resamples indices, so each pair stays together.
    """
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise PairingError(f"need two equal, non-empty vectors of verdicts, got {a.shape} and {b.shape}")
    differences = a.astype(float) - b.astype(float)
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    return {
        "n": int(a.size),
        "share_a": float(a.mean()),
        "share_b": float(b.mean()),
        "difference": float(differences.mean()),
        "difference_ci95": list(bootstrap_mean_ci(differences, n_boot=n_boot, level=level, seed=seed)),
        "a_only": a_only,
        "b_only": b_only,
        "agree": float((a == b).mean()),
        "mcnemar_p": mcnemar_exact_p(a_only, b_only),
    }


def setting_verdicts(record: dict[str, Any], setting: str) -> np.ndarray:
    """Whether the judge put each sample of one sweep setting in its class (samples are class-major)."""
    settings = record.get("temperatures", {})
    if setting not in settings:
        raise PairingError(f"no setting {setting!r} in the sweep (it has {', '.join(settings) or 'none'})")
    entry = settings[setting]
    if "judge_predictions" not in entry:
        raise PairingError(
            f"setting {setting!r} has no per-sample verdicts (judge_predictions); rerun the sweep with this "
            "version of pcnn (same --seed, so the samples are the same)"
        )
    predictions = np.asarray(entry["judge_predictions"], dtype=np.int64)
    per_class = int(entry["samples_per_class"])
    labels = np.repeat(np.arange(len(predictions) // per_class), per_class)
    if labels.size != predictions.size:
        raise PairingError(f"{predictions.size} verdicts are not {per_class} per class")
    return predictions == labels


def _check_paired(a: dict[str, Any], b: dict[str, Any], setting_a: str, setting_b: str) -> None:
    """Refuse judgements whose samples were not drawn from the same random numbers or judged alike."""
    entry_a, entry_b = a["temperatures"][setting_a], b["temperatures"][setting_b]
    for key in ("seed", "samples_per_class"):
        if entry_a[key] != entry_b[key]:
            raise PairingError(f"not paired: {key} {entry_a[key]} against {entry_b[key]}")
    judge_a, judge_b = a.get("judge", {}), b.get("judge", {})
    for key in ("seed", "epochs", "accuracy"):
        if judge_a.get(key) != judge_b.get(key):
            raise PairingError(f"judged by different judges: {key} {judge_a.get(key)} and {judge_b.get(key)}")


def compare_sweeps(
    a: dict[str, Any], b: dict[str, Any], setting_a: str = "1.0", setting_b: str | None = None
) -> dict[str, Any]:
    """The paired difference (A minus B) overall and per class of two sweep records' settings."""
    setting_b = setting_b or setting_a
    correct_a, correct_b = setting_verdicts(a, setting_a), setting_verdicts(b, setting_b)
    _check_paired(a, b, setting_a, setting_b)
    per_class_n = int(a["temperatures"][setting_a]["samples_per_class"])
    result = {"setting_a": setting_a, "setting_b": setting_b, **paired_difference(correct_a, correct_b)}
    result["per_class"] = {
        name: paired_difference(
            correct_a[k * per_class_n : (k + 1) * per_class_n],
            correct_b[k * per_class_n : (k + 1) * per_class_n],
        )
        for k, name in enumerate(CLASS_NAMES[: len(correct_a) // per_class_n])
    }
    return result


def _line(name: str, d: dict[str, Any]) -> str:
    low, high = d["difference_ci95"]
    return (
        f"{name:<8} {100 * d['share_a']:5.1f}% vs {100 * d['share_b']:5.1f}%: "
        f"{100 * d['difference']:+5.1f} points [{100 * low:+.1f}, {100 * high:+.1f}], "
        f"discordant {d['a_only']}/{d['b_only']}, McNemar p = {d['mcnemar_p']:.3g}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pcnn.paired",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_a", help="sweep.json of A (python -m pcnn.temperature_sweep)")
    parser.add_argument("sweep_b", help="sweep.json of B, drawn with the same --seed and --per-class")
    parser.add_argument("--setting", default="1.0", help="A's setting key, e.g. 1.0 or 0.9 or 1.0_w2")
    parser.add_argument("--setting-b", default=None, help="B's setting key (default: the same as A's)")
    parser.add_argument("--out", default=None, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    try:
        records = [json.loads(Path(p).read_text()) for p in (args.sweep_a, args.sweep_b)]
        result = compare_sweeps(*records, args.setting, args.setting_b)
    except (OSError, json.JSONDecodeError, PairingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"sweep_a": args.sweep_a, "sweep_b": args.sweep_b, **result}
    print(f"A = {args.sweep_a} [{result['setting_a']}], B = {args.sweep_b} [{result['setting_b']}]")
    print("judged in class, A minus B, paired bootstrap 95% interval:")
    print(_line("overall", result))
    for name, d in result["per_class"].items():
        print(_line(name, d))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
