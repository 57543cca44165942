"""`python -m pcnn.gpu_smoke` on a machine without a GPU: arguments, the refusal, and the record it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pcnn.config import apply_overrides, profile
from pcnn.workflow import gpu_smoke
from pcnn.workflow.pipeline import stage_sizes

from .test_records import absolute_paths


def test_smoke_sizes_fit_the_pipeline_and_budget_the_training() -> None:
    sizes = gpu_smoke.smoke_sizes(2.5)
    chosen = stage_sizes(gpu_smoke.PROFILE, sizes)  # raises on a name StageSizes does not have
    config = apply_overrides(profile(gpu_smoke.PROFILE), chosen.train_overrides)
    assert config.train.max_minutes == 2.5 and config.model.nr_filters == 128
    assert {"model.nr_filters=40", "model.nr_logistic_mix=10"} <= set(chosen.ablation_overrides)
    assert chosen.eval_subset == 0, "accuracy on every validation image"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_refuses_without_a_cuda_device(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pcnn.gpu_smoke", "--data-dir", str(tmp_path), "--minutes", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "Nothing was run" in proc.stderr
    assert list(tmp_path.iterdir()) == [], "nothing written"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "0"], "--minutes must be positive"),
        (["--name", "../elsewhere"], "--name must be a plain folder name"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_exit_2_before_any_work(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpu_smoke, "run_smoke", lambda **kwargs: pytest.fail("ran despite bad arguments"))
    with pytest.raises(SystemExit) as exit_info:
        gpu_smoke.main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_record_folder_is_portable_and_indexed(tmp_path: Path) -> None:
    run = tmp_path / "build" / "seed" / "runs" / "main"
    run.mkdir(parents=True)
    metrics = {"step": 390, "epoch": 3, "images_per_s": 2400.0, "val_accuracy": 0.5, "val_bits_per_dim": 4.2}
    (run / "metrics.jsonl").write_text(json.dumps(metrics) + "\n")
    (run / "train_loss.csv").write_text("step,loss\n1,7.0\n")
    (run / "provenance.json").write_text(json.dumps({"sessions": [{"data_dir": str(tmp_path / "data")}]}))
    record = gpu_smoke.build_record(
        data="<CPEN455 data>",
        device={
            "name": "NVIDIA H200",
            "compute_capability": "9.0",
            "memory_gib": 139.8,
            "torch": "2",
            "cuda": "13",
        },
        precision="bf16: compute capability 9.0 has native bf16",
        minutes=3.0,
        train_status="budget",
        train_seconds=181.0,
        metrics=[metrics],
        pipeline={"seconds": {"01_training": 20.0}, "figures": str(tmp_path / "build" / "seed" / "figures")},
        results={
            "training": {"validation": {"accuracy": 0.55, "accuracy_ci95": [0.5, 0.6], "macro_f1": 0.5}},
            "sampling": {"fid": {"course": {"model": {"mean": 20.0}, "floor": {"mean": 31.0}}}},
        },
        command=["gpu_smoke.py", "--data-dir", str(tmp_path / "data")],
    )
    roots = {str(tmp_path / "data"): "<CPEN455 data>", str(tmp_path / "build" / "seed"): "<build>"}
    out = tmp_path / "figures" / "runs" / "gpu_seed_smoke"
    gpu_smoke.write_record(out, run, record, roots)
    saved = json.loads((out / gpu_smoke.RECORD).read_text())
    assert saved["training"]["steps"] == 390 and saved["pipeline"]["validation"]["accuracy"] == 0.55
    assert saved["command"] == ["gpu_smoke.py", "--data-dir", "<CPEN455 data>"]
    for name in ("gpu_smoke.json", "provenance.json"):
        assert absolute_paths(json.loads((out / name).read_text()), (str(tmp_path),)) == [], name
    readme = (out / "README.md").read_text()
    assert readme.startswith("# `seed`-profile GPU smoke on NVIDIA H200") and "not a result" in readme
    assert "accuracy 55.0% [50.0, 60.0]" in readme and "2400.0 training images/s" in readme
    index = (out.parent / "README.md").read_text()
    assert "[`gpu_seed_smoke/`](gpu_seed_smoke/README.md)" in index and "| 390 | 3 |" in index
