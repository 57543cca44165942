"""Data parallelism over CPU cores within one step (`pcnn.fast.core_parallel`): same loss and gradient as one
process, reproducible, resumable bit for bit, and loud when a helper dies."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pcnn.config import ModelConfig, TrainConfig
from pcnn.core.model import build_model
from pcnn.datasets import make_synthetic
from pcnn.fast import precision
from pcnn.fast.core_parallel import CoreParallel, helps_on_this_cpu, part_sizes, scored_count
from pcnn.training.distributed import DistInfo
from pcnn.training.engine import TrainStep, build_optimizer, make_train_step, resolve_processes, train
from pcnn.workflow.runrecord import read_losses
from tests.conftest import grid_images
from tests.float32 import accumulation_rtol, assert_close_in_float32
from tests.test_train import _assert_same_run, tiny_config

# Compares computations that round differently on other CPUs: run again under AVX2 kernels (Makefile).
pytestmark = pytest.mark.isa_sensitive


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def two_part_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """5 images whose parts (3 + 2) have very different losses, so that a part weighted wrongly shows."""
    x = grid_images(5, 8)
    x[3:] = -1.0  # black images: far likelier than the grid images
    return x, torch.tensor([0, 1, 2, 3, 1])


def steps_of(processes: int, dropout: float = 0.0, steps: int = 2, **train: object):
    """A tiny model trained `steps` steps on `two_part_batch`: (losses, model, step)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=dropout))
    settings = {"batch_size": 5, "compile": "off", "precision": "fp32", "cpu_processes": processes, **train}
    config = TrainConfig(**settings)
    step = make_train_step(model, build_optimizer(model, config), config)
    x, labels = two_part_batch()
    return [step(x, labels) for _ in range(steps)], model, step


def test_two_processes_train_like_one() -> None:
    """Same loss and gradient as one process, up to float32 summation order. Gradients, not parameters
    after Adam steps, are compared: Adam's first update is lr * sign(g), which turns a rounding
    difference in a near-zero gradient element into a full step."""
    (one, model_one, _), (two, model_two, step) = steps_of(1, steps=1), steps_of(2, steps=1)
    assert len(step.helper_pids) == 1
    rtol = accumulation_rtol(model_one, 5 * 8 * 8)
    assert two == pytest.approx(one, rel=rtol)
    for a, b in zip(model_one.parameters(), model_two.parameters()):
        assert_close_in_float32(b.grad, a.grad, rtol)


def test_two_process_steps_are_reproducible_with_dropout() -> None:
    (first, model_a, _), (second, model_b, _) = (
        steps_of(2, dropout=0.5, steps=3),
        steps_of(2, dropout=0.5, steps=3),
    )
    assert first == second  # bit for bit: the helper's dropout is seeded from this process's generator
    assert all(torch.equal(a, b) for a, b in zip(model_a.parameters(), model_b.parameters()))


def test_the_hybrid_loss_weighs_each_part_by_its_images_and_scored_images() -> None:
    assert part_sizes(5, 2) == [3, 2] and part_sizes(2, 3) == [1, 1, 0]
    cores = CoreParallel(build_model(ModelConfig(nr_filters=8, image_size=8)), [], None, 2, 1, 0.5, 5)
    assert [scored_count(n, 0.5) for n in (3, 2)] == [2, 1]
    assert [w for pair in cores.weights([3, 2]) for w in pair] == pytest.approx([0.6, 2 / 3, 0.4, 1 / 3])
    hybrid = dict(disc_weight=0.5, disc_fraction=0.5)
    (losses, _, _) = steps_of(2, steps=1, **hybrid)
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    eager = TrainStep(model, None, TrainConfig(batch_size=5, compile="off", precision="fp32", **hybrid))
    x, labels = two_part_batch()
    with torch.no_grad():
        parts = [eager._objective(x[:3], labels[:3]), eager._objective(x[3:], labels[3:])]
    expected = sum(
        wb * bpd + wc * (loss - bpd) for (loss, bpd), (wb, wc) in zip(parts, cores.weights([3, 2]))
    )
    assert losses[0] == pytest.approx(expected.item(), rel=accumulation_rtol(model, 5 * 8 * 8))


def hybrid_step_at(processes: int, disc_scale: float, disc_weight: float = 0.5):
    """One step of the tiny model on `two_part_batch` with the hybrid term at `disc_scale` of its
    weight: (loss, bits/dim, gradients)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    config = TrainConfig(
        batch_size=5,
        compile="off",
        precision="fp32",
        cpu_processes=processes,
        disc_weight=disc_weight,
        disc_fraction=0.5,
    )
    step = make_train_step(model, build_optimizer(model, config), config)
    step.disc_scale = disc_scale
    loss = step(*two_part_batch())
    return loss, step.bits_per_dim, [p.grad.clone() for p in model.parameters()], model


@pytest.mark.parametrize("processes", [1, 2])
def test_the_warm_up_scales_only_the_cross_entropy(processes: int) -> None:
    full, bpd, _, model = hybrid_step_at(processes, 1.0)
    half, half_bpd, half_grads, _ = hybrid_step_at(processes, 0.5)
    rtol = accumulation_rtol(model, 5 * 8 * 8)
    assert half_bpd == pytest.approx(bpd, rel=rtol)
    assert full > bpd and half == pytest.approx(bpd + 0.5 * (full - bpd), rel=rtol)
    _, _, off_grads, _ = hybrid_step_at(processes, 0.0)
    _, _, plain_grads, _ = hybrid_step_at(processes, 1.0, disc_weight=0.0)  # the likelihood alone
    for off, plain in zip(off_grads, plain_grads):
        assert_close_in_float32(off, plain, rtol)
    assert any(not torch.allclose(a, b) for a, b in zip(half_grads, plain_grads))


def test_bad_batches_are_refused_before_they_reach_the_helper() -> None:
    _, _, step = steps_of(2, steps=1)
    x = grid_images(5, 8)
    with pytest.raises(ValueError, match="labels must lie"):  # here, not as a failed helper
        step(x, torch.tensor([0, 1, 2, 3, 9]))
    with pytest.raises(ValueError, match="train.batch_size"):
        step(grid_images(8, 8), torch.tensor([0, 1, 2, 3] * 2))
    assert math.isfinite(step(x, torch.tensor([0, 1, 2, 3, 1])))  # the helper is still there


def test_a_failure_in_the_main_part_leaves_the_helper_in_step() -> None:
    (losses, _, _), (_, _, step) = steps_of(2, steps=2), steps_of(2, steps=1)
    x, labels = two_part_batch()

    def failing(*args):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        step.cores.backward(x, labels, failing)
    assert step(x, labels) == losses[1]  # the helper's gradient is this step's, not the failed one's


def test_a_dead_helper_fails_the_step_clearly() -> None:
    _, _, step = steps_of(2, steps=1)
    os.kill(step.helper_pids[0], signal.SIGKILL)
    with pytest.raises(RuntimeError, match="helper process .* died"):
        step(grid_images(5, 8), torch.tensor([0, 1, 2, 3, 1]))


@pytest.mark.parametrize(
    ("device", "compile_on", "threads", "setting", "expected"),
    [
        ("cpu", True, 2, 0, 2),  # auto: a compiled CPU step on two threads (on an AVX2 CPU, mocked)
        ("cpu", False, 2, 0, 1),  # not compiled: a short run, not worth starting a helper
        ("cpu", True, 1, 0, 1),
        ("cuda", True, 2, 0, 1),
        ("cpu", False, 1, 3, 3),  # asked for
    ],
)
def test_auto_splits_only_long_cpu_runs(monkeypatch, device, compile_on, threads, setting, expected) -> None:
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    torch.set_num_threads(threads)
    config = TrainConfig(cpu_processes=setting)
    assert resolve_processes(config, torch.device(device), compile_on, DistInfo()) == expected
    assert resolve_processes(config, torch.device("cpu"), compile_on, DistInfo(world_size=2)) == 1


@pytest.mark.parametrize(
    ("capability", "flags", "expected"),
    [
        ("AVX2", frozenset({"avx2"}), True),  # AMD EPYC (AVX2): 1.10-1.21x
        ("AVX512", frozenset({"avx512f", "avx512_bf16"}), True),  # AMD EPYC with native bf16: 1.14x
        ("AVX512", frozenset({"avx512f"}), False),  # Intel Xeon without avx512_bf16: 0.92x
        ("DEFAULT", frozenset(), False),  # not measured
    ],
)
def test_a_second_process_is_used_only_where_it_was_measured_to_help(
    monkeypatch, capability, flags, expected
) -> None:
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    assert helps_on_this_cpu(capability, flags) is expected
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    torch.set_num_threads(2)
    auto = TrainConfig(cpu_processes=0)
    assert resolve_processes(auto, torch.device("cpu"), True, DistInfo()) == (2 if expected else 1)


def test_a_two_process_run_resumes_bit_for_bit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = make_synthetic(tmp_path / "data", seed=0, counts={"train": 8, "validation": 4, "test": 4})
    config = tiny_config(cpu_processes=2, epochs=2)
    reference = train(config, data_dir=data_dir, run_dir=tmp_path / "reference", progress=False)
    assert "shared by 2 processes" in capsys.readouterr().out
    session = json.loads((reference.run_dir / "provenance.json").read_text())["sessions"][-1]
    assert session["cpu_processes"] == 2 and session["precision"].startswith("fp32: asked for")
    run = tmp_path / "run"
    first = train(
        config, data_dir=data_dir, run_dir=run, progress=False, on_step=lambda step, loss: step == 5
    )
    assert first.status == "callback"
    train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    assert all(math.isfinite(v) for _, v in read_losses(run))
    _assert_same_run(run, reference.run_dir)


def test_a_hung_helper_is_stopped_and_named() -> None:
    _, _, step = steps_of(2, steps=1)
    pid = step.helper_pids[0]
    step.cores._helpers[0].timeout_s = 2.0
    os.kill(pid, signal.SIGSTOP)  # alive, never answering
    try:
        with pytest.raises(RuntimeError, match=f"pid {pid}\\) gave no answer within 2 s"):
            step(*two_part_batch())
        step.cores._helpers[0].process.join(timeout=10)
        assert not step.cores._helpers[0].process.is_alive()  # stopped, not left behind
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


UNGUARDED_SCRIPT = """
import torch
from pcnn.config import ModelConfig, TrainConfig
from pcnn.core.model import build_model
from pcnn.training.engine import build_optimizer, make_train_step
print("top level ran", flush=True)
torch.manual_seed(0)
model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8))
config = TrainConfig(batch_size=4, compile="off", precision="fp32", cpu_processes=2)
step = make_train_step(model, build_optimizer(model, config), config)
x = torch.linspace(-1, 1, 4 * 3 * 8 * 8).view(4, 3, 8, 8)
losses = [step(x, torch.tensor([0, 1, 2, 3])) for _ in range(2)]
print("helpers", len(step.helper_pids), "losses", losses, flush=True)
"""


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_the_step_runs_from_a_script_without_a_main_guard_and_from_stdin(tmp_path: Path, how: str) -> None:
    """spawn would re-run an unguarded script in the helper, and finds no file to re-import for stdin."""
    script = tmp_path / "train_me.py"
    script.write_text(UNGUARDED_SCRIPT)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    done = subprocess.run(
        command,
        input=None if how == "file" else UNGUARDED_SCRIPT,
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("top level ran") == 1  # the helper did not run the script again
    assert "helpers 1 losses" in done.stdout


@pytest.mark.slow
def test_the_compiled_two_process_step_matches_the_eager_two_process_step() -> None:
    """The path `pcnn train` takes on a multi-core CPU: compiled, two processes, the helper compiling its
    own graph, against the same split computed eagerly (the hybrid term scores the first images of each
    part, so one process would score other images). Batch 4 splits into equal parts, so both processes
    compile the same graph at once."""
    torch.set_num_threads(2)
    hybrid = dict(disc_weight=0.5, disc_fraction=0.5, batch_size=4, precision="fp32")
    x, labels = two_part_batch()
    x, labels = x[1:], labels[1:]  # two grid images in the main part, two black ones in the helper's

    def one_step(**train: object) -> tuple[float, nn.Module, TrainStep]:
        torch.manual_seed(0)
        model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
        config = TrainConfig(**{**hybrid, **train})
        step = make_train_step(model, build_optimizer(model, config), config)
        return step(x, labels), model, step

    (eager, model_eager, _), (compiled, model_compiled, step) = (
        one_step(compile="off", cpu_processes=2),
        one_step(compile="on", cpu_processes=2),
    )
    assert step.compiled and len(step.helper_pids) == 1
    rtol = accumulation_rtol(model_eager, 4 * 8 * 8)
    assert compiled == pytest.approx(eager, rel=rtol)
    for a, b in zip(model_eager.parameters(), model_compiled.parameters()):
        assert_close_in_float32(b.grad, a.grad, rtol)
