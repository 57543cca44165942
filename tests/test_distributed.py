"""Data-parallel training: two CPU processes under torchrun (gloo) train like one process."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from pcnn.training.checkpoint import load_checkpoint
from pcnn.training.engine import train
from pcnn.workflow.runrecord import read_losses, read_metrics
from tests.test_train import REPO, data_dir, one_thread, tiny_config  # noqa: F401  (fixtures)

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from pcnn.config import RunConfig
    from pcnn.training.engine import train
    config = RunConfig.from_dict(json.loads(sys.argv[1]))
    train(config, data_dir=sys.argv[2], run_dir=sys.argv[3], progress=False)
    # Nothing may keep the process group alive past train(): gloo aborts when it dies at interpreter exit.
    import gc
    left = [o for o in gc.get_objects() if isinstance(o, torch.nn.parallel.DistributedDataParallel)]
    assert not left, f"train() left {len(left)} DistributedDataParallel wrapper(s) alive"
    """
)


def test_two_gloo_processes_match_one_process(data_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    # Without dropout the only randomness is the data order and augmentation, which are shared by design:
    # two processes each take half of every global batch, so the averaged gradients match one process.
    base = tiny_config(epochs=2, batch_size=8)
    config = dataclasses.replace(base, model=dataclasses.replace(base.model, dropout=0.0))
    single = train(config, data_dir=data_dir, run_dir=tmp_path / "single", progress=False)

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        config.to_json(),
        str(data_dir),
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ddp_run = tmp_path / "ddp"
    ddp_losses, single_losses = read_losses(ddp_run), read_losses(single.run_dir)
    assert (
        [s for s, _ in ddp_losses] == [s for s, _ in single_losses] == list(range(1, 9))
    )  # rank 0 logs once
    torch.testing.assert_close([v for _, v in ddp_losses], [v for _, v in single_losses], rtol=1e-4, atol=0)
    assert [m["epoch"] for m in read_metrics(ddp_run)] == [1, 2]
    sessions = json.loads((ddp_run / "provenance.json").read_text())["sessions"]
    assert len(sessions) == 1 and sessions[0]["world_size"] == 2
    state = load_checkpoint(ddp_run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    reference = load_checkpoint(single.last_checkpoint)["model"]
    for key, value in state["model"].items():
        torch.testing.assert_close(value, reference[key], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("world", [3])
def test_batch_must_split_evenly(world: int) -> None:
    from pcnn.datasets.train_data import rank_batches

    with pytest.raises(ValueError, match="divisible"):
        rank_batches(32, 8, 0, world)
