"""The training engine: schedule, data order, run records, exact resume, guard rails, hybrid loss, CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pcnn.commands.train_cli import add_train_parser
from pcnn.config import ModelConfig, RunConfig, TrainConfig, apply_overrides, profile
from pcnn.core.classify import class_log_likelihoods, posterior
from pcnn.core.likelihood import dmol_nll
from pcnn.core.model import build_model
from pcnn.datasets import make_synthetic
from pcnn.datasets.train_data import epoch_order, holdout_split, rank_batches, sample_seed, subset_indices
from pcnn.fast import convgrad
from pcnn.training.checkpoint import load_checkpoint, load_model
from pcnn.training.engine import (
    NonFiniteLossError,
    TrainStep,
    build_optimizer,
    lr_at,
    make_train_step,
    resolve_compile,
    train,
)
from pcnn.workflow.runrecord import read_losses, read_metrics
from tests.conftest import grid_images

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch):
    """Tiny models run fastest (and bit-reproducibly across processes) on one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "data"
    return make_synthetic(root, seed=0, counts={"train": 8, "validation": 4, "test": 4})


def tiny_config(**train: object) -> RunConfig:
    """8x8 images, 8 filters, 3 mixtures; 32 training images in batches of 4 = 8 steps per epoch."""
    settings: dict[str, object] = dict(
        epochs=3,
        batch_size=4,
        lr=2e-3,
        lr_decay=0.9,
        lr_switch_epoch=2,
        lr_after_switch=1e-3,
        lr_decay_after_switch=0.5,
        seed=3,
        eval_every=1,
        eval_batch_size=16,
        polyak=True,
        polyak_decay=0.9,
        sample_every=0,
        checkpoint_every=0,
        compile="off",
        precision="fp32",
    )
    settings.update(train)
    return RunConfig(
        name="tiny",
        model=ModelConfig(nr_resnet=1, nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.5),
        train=TrainConfig(**settings),
    )


@pytest.fixture(scope="module")
def reference(data_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One uninterrupted run that the resume tests compare against."""
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = train(
        tiny_config(checkpoint_every=2, sample_every=2, sample_per_class=1),
        data_dir=data_dir,
        run_dir=run_dir,
        progress=False,
    )
    return result


# ------------------------------------------------------------------------------------------ pure parts
def test_lr_schedule_decays_per_epoch_and_switches() -> None:
    tc = TrainConfig(
        lr=2e-4, lr_decay=0.99995, lr_switch_epoch=501, lr_after_switch=1e-4, lr_decay_after_switch=0.997
    )
    assert lr_at(tc, 0) == 2e-4
    assert lr_at(tc, 500) == pytest.approx(2e-4 * 0.99995**500)  # epoch 501, the last before the switch
    assert lr_at(tc, 501) == 1e-4  # epoch 502
    assert lr_at(tc, 511) == pytest.approx(1e-4 * 0.997**10)
    assert lr_at(TrainConfig(lr=1.0, lr_decay=0.5), 3) == 0.125


def test_seed_profile_is_the_original_configuration() -> None:
    seed = profile("seed")
    assert (seed.model.nr_filters, seed.model.nr_logistic_mix, seed.model.nr_resnet) == (128, 100, 1)
    assert (seed.train.batch_size, seed.train.lr, seed.train.seed, seed.train.lr_switch_epoch) == (
        32,
        2e-4,
        4399,
        501,
    )
    assert (
        seed.train.epochs == 801
        and seed.train.lr_decay == 0.99995
        and seed.train.lr_decay_after_switch == 0.997
    )
    assert profile("cpu").train.max_minutes == 60
    config = apply_overrides(profile("smoke"), ["train.epochs=3", "model.nr_filters=64", "train.polyak=true"])
    assert (config.train.epochs, config.model.nr_filters, config.train.polyak) == (3, 64, True)
    for bad in ("train.disc_temperature=0", "train.disc_fraction=1.5", "train.precision=fp8"):
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            apply_overrides(profile("smoke"), [bad])


def test_data_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a, b = epoch_order(50, 2, seed=1), epoch_order(50, 2, seed=1)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, 3, seed=1))
    assert sample_seed(1, 2, 3) == sample_seed(1, 2, 3) != sample_seed(1, 2, 4)
    # Two processes together see exactly the global batches of one process.
    single = rank_batches(50, 8, 0, 1)
    two = [rank_batches(50, 8, r, 2) for r in range(2)]
    assert len(single) == 6 and all(len(b) == 4 for b in two[0])
    assert [two[0][k] + two[1][k] for k in range(6)] == single
    with pytest.raises(ValueError, match="divisible"):
        rank_batches(50, 9, 0, 2)


def test_subset_and_holdout_are_fixed_and_disjoint() -> None:
    labels = [i % 4 for i in range(40)]
    assert np.array_equal(subset_indices(labels, 10, 0), subset_indices(labels, 10, 0))
    assert len(subset_indices(labels, 10, 0)) == 10 and len(subset_indices(labels, 0, 0)) == 40
    keep, held = holdout_split(labels, 0.2, seed=0)
    assert len(held) == 8 and not set(keep) & set(held) and len(keep) + len(held) == 40
    assert sorted(np.bincount(np.asarray(labels)[held]).tolist()) == [2, 2, 2, 2]


# ------------------------------------------------------------------------------------------- the step
def test_train_step_is_adam_on_the_bits_per_dim_loss() -> None:
    config = tiny_config().train
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    twin = build_model(model.config)
    twin.load_state_dict(model.state_dict())
    x, labels = grid_images(4, 8), torch.tensor([0, 1, 2, 3])
    step = make_train_step(model, build_optimizer(model, config), config)
    loss = step(x, labels)
    optimizer = torch.optim.Adam(twin.parameters(), lr=config.lr)
    expected = dmol_nll(x, twin(x, labels)).mean() / (3 * 64 * math.log(2))
    expected.backward()
    optimizer.step()
    assert loss == pytest.approx(expected.item(), rel=1e-6) and not step.skipped
    for a, b in zip(model.parameters(), twin.parameters()):  # the fast path's gradient is the same
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(a, b, rtol=0, atol=2.5 * config.lr)  # one Adam step moves at most ~lr


@pytest.mark.parametrize("temperature", [1.0, 1e6])
def test_hybrid_objective_adds_the_posterior_cross_entropy(temperature: float) -> None:
    config = tiny_config(disc_weight=0.5, disc_fraction=0.5, disc_temperature=temperature).train
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    x, labels = grid_images(4, 8), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ll = class_log_likelihoods(model, x)
        bpd = (-ll[torch.arange(4), labels]).mean() / (3 * 64 * math.log(2))
        ce = torch.nn.functional.nll_loss(posterior(ll[:2] / temperature), labels[:2])
    if temperature > 1e5:  # so hot that the posterior is uniform: the term is log K whatever the image
        assert ce.item() == pytest.approx(math.log(4), rel=1e-4)
    step = TrainStep(model, build_optimizer(model, config), config)
    loss = step(x, labels)
    assert step.bits_per_dim == pytest.approx(bpd.item(), rel=1e-5)
    assert loss == pytest.approx((bpd + 0.5 * ce).item(), rel=1e-5)


def twin_steps(
    *settings: dict[str, object],
) -> tuple[list[torch.nn.Module], list[TrainStep], torch.Tensor, torch.Tensor]:
    """Identically initialised tiny models (no dropout), one training step per dict of `tiny_config`
    settings, and one batch of 8x8 grid images with a label each."""
    torch.manual_seed(0)
    first = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    models = [first]
    for _ in settings[1:]:
        models.append(build_model(first.config))
        models[-1].load_state_dict(first.state_dict())
    steps = []
    for net, overrides in zip(models, settings):
        config = tiny_config(**overrides).train
        steps.append(make_train_step(net, build_optimizer(net, config), config))
    return models, steps, grid_images(4, 8), torch.tensor([0, 1, 2, 3])


@pytest.mark.isa_sensitive
def test_compiled_step_trains_like_the_eager_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `cpu` profile compiles its step on the CPU: same losses as eager, up to float rounding.

    Slow on a fresh machine (inductor compiles C++ for a minute or two; later runs hit its cache)."""
    monkeypatch.setattr(convgrad, "MIN_PIXELS", 0)  # the tiny layers take the CPU weight gradient too
    monkeypatch.setattr(convgrad, "MIN_CHANNELS", 0)
    hybrid = dict(disc_weight=0.1, disc_fraction=0.5)
    _, (compiled, eager), x, labels = twin_steps(dict(compile="on", **hybrid), dict(compile="off", **hybrid))
    for _ in range(3):
        assert compiled(x, labels) == pytest.approx(eager(x, labels), rel=1e-5)
    assert compiled.compiled and not eager.compiled


def test_bf16_autocast_step_trains_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set train.precision=bf16` on any CPU: the step runs (the fast convolutions fall back under
    autocast) and updates the model, with a loss close to the float32 step's."""
    monkeypatch.setattr(convgrad, "MIN_PIXELS", 0)
    monkeypatch.setattr(convgrad, "MIN_CHANNELS", 0)
    (model, _), steps, x, labels = twin_steps(dict(precision="bf16"), dict(precision="fp32"))
    losses = [step(x, labels) for step in steps]
    assert math.isfinite(losses[0]) and losses[0] == pytest.approx(losses[1], rel=0.02)
    assert not torch.equal(model.u_init.bias, torch.zeros_like(model.u_init.bias))


def test_fp16_scales_the_loss_and_resumes_with_the_scaler(data_dir: Path, tmp_path: Path) -> None:
    """fp16 (the choice on GPUs with fp16 tensor cores and no native bf16) trains with a gradient scaler,
    in one process, and a resumed run repeats the uninterrupted one. Run on the CPU's fp16 autocast."""
    config = tiny_config(precision="fp16", cpu_processes=2, epochs=1)
    reference = train(config, data_dir=data_dir, run_dir=tmp_path / "reference", progress=False)
    assert all(math.isfinite(v) for _, v in read_losses(reference.run_dir))
    assert load_checkpoint(reference.last_checkpoint)["grad_scaler"]["scale"] > 0
    run = tmp_path / "run"
    stopped = train(
        config, data_dir=data_dir, run_dir=run, progress=False, on_step=lambda step, loss: step == 3
    )
    assert stopped.status == "callback"
    train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    _assert_same_run(run, reference.run_dir)
    torch.manual_seed(0)
    model = build_model(config.model)
    step = make_train_step(model, build_optimizer(model, config.train), config.train)
    assert step.scaler is not None and step.processes == 1  # helpers would miss the scale factor


@pytest.mark.parametrize(
    ("compile_mode", "max_steps", "max_minutes", "device", "expected"),
    [
        ("auto", 0, 0.0, "cpu", False),  # no budget: a test or a quick look, not worth minutes
        ("auto", 0, 60.0, "cpu", True),  # the cpu profile's hour
        ("auto", 0, 10.0, "cpu", False),
        ("auto", 150, 60.0, "cpu", False),  # the step budget is the sharper statement
        ("auto", 5000, 0.0, "cpu", True),
        ("auto", 10, 0.0, "cuda", True),
        ("on", 10, 0.0, "cpu", True),
        ("off", 0, 60.0, "cuda", False),
    ],
)
def test_auto_compiles_only_runs_long_enough_to_repay_it(
    compile_mode: str, max_steps: int, max_minutes: float, device: str, expected: bool
) -> None:
    config = TrainConfig(compile=compile_mode, max_steps=max_steps, max_minutes=max_minutes)
    assert resolve_compile(config, torch.device(device)) is expected


def test_a_failing_compiler_falls_back_to_the_eager_objective(capsys) -> None:
    config = tiny_config().train
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8, dropout=0.0))
    x, labels = grid_images(4, 8), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        expected = dmol_nll(x, model(x, labels)).mean() / (3 * 64 * math.log(2))
    step = make_train_step(model, build_optimizer(model, config), config)

    def broken_compiler(*args):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    step.objective = broken_compiler  # what a compiled objective does without gcc
    assert step(x, labels) == pytest.approx(expected.item(), rel=1e-5)
    assert not step.compiled and "training without it" in capsys.readouterr().err
    step.objective = broken_compiler
    with pytest.raises(ValueError, match="square images"):  # a real error is not swallowed
        step(x[..., :6], labels)


@pytest.mark.parametrize("disc_weight", [0.0, 0.1])
def test_the_compiled_objective_is_one_graph(disc_weight: float) -> None:
    """No graph break between the network and the likelihood (one fused graph was 1.06x faster at
    nf 40); bad labels are still caught, before the compiled code runs."""
    _, (step,), x, labels = twin_steps(dict(compile="on", disc_weight=disc_weight, disc_fraction=0.5))
    explanation = torch._dynamo.explain(step._objective)(x, labels)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    with pytest.raises(ValueError, match="labels must lie"):
        step(x, torch.tensor([0, 1, 2, 9]))


def test_non_finite_loss_skips_the_update() -> None:
    config = tiny_config().train
    torch.manual_seed(0)
    model = build_model(ModelConfig(nr_filters=8, nr_logistic_mix=3, image_size=8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = make_train_step(model, build_optimizer(model, config), config)
    x = grid_images(4, 8)
    x[0, 0, 0, 0] = float("nan")
    loss = step(x, torch.tensor([0, 1, 2, 3]))
    assert step.skipped and not math.isfinite(loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------------------- run records
def test_run_folder_records_everything(reference) -> None:
    run = reference.run_dir
    assert reference.status == "epochs" and reference.step == 24 and reference.epochs_completed == 3
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["seed"] == 3 and config["model"]["nr_filters"] == 8
    session = json.loads((run / "provenance.json").read_text())["sessions"][0]
    assert {"git", "packages", "device", "cpu", "command"} <= set(session)
    losses = read_losses(run)
    assert [s for s, _ in losses] == list(range(1, 25)) and all(math.isfinite(v) for _, v in losses)
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    for key in (
        "step",
        "train_bits_per_dim",
        "val_bits_per_dim",
        "val_accuracy",
        "val_f1",
        "lr",
        "images_per_s",
        "wall_time_s",
    ):
        assert metrics[-1][key] is not None, key
    assert [m["lr"] for m in metrics] == pytest.approx([2e-3, 2e-3 * 0.9, 1e-3])
    assert (run / "checkpoints" / "epoch_0002.pt").is_file() and (
        run / "samples" / "epoch_0002.png"
    ).is_file()
    state = load_checkpoint(reference.last_checkpoint)
    assert state["ema"] is not None and state["progress"]["step"] == 24
    best = load_model(reference.best_checkpoint)  # EMA weights by default
    assert best.config.nr_filters == 8
    assert not any(
        torch.equal(a, b)
        for a, b in zip(state["ema"].values(), state["model"].values())
        if a.dtype.is_floating_point and a.numel() > 4
    )


# -------------------------------------------------------------------------------------- exact resume
KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from pcnn.config import RunConfig
    from pcnn.training.engine import train
    config = RunConfig.from_dict(json.loads(sys.argv[1]))
    kill_at = int(sys.argv[4])
    def hook(step, loss):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    train(config, data_dir=sys.argv[2], run_dir=sys.argv[3], progress=False, on_step=hook)
    """
)


def _assert_same_run(resumed: Path, reference: Path) -> None:
    assert read_losses(resumed) == read_losses(reference)  # every step, bit for bit
    keys = ("epoch", "step", "train_bits_per_dim", "val_bits_per_dim", "val_accuracy", "val_f1", "lr")
    assert [{k: m[k] for k in keys} for m in read_metrics(resumed)] == [
        {k: m[k] for k in keys} for m in read_metrics(reference)
    ]
    a, b = (
        load_checkpoint(resumed / "checkpoints/last.pt"),
        load_checkpoint(reference / "checkpoints/last.pt"),
    )
    assert all(torch.equal(a["ema"][k], b["ema"][k]) for k in a["ema"])


def test_resume_after_sigkill_repeats_the_uninterrupted_run(
    reference, data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = tiny_config(checkpoint_every=2, sample_every=2, sample_per_class=1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, config.to_json(), str(data_dir), str(run), "13"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    # killed in epoch 2 at step 13: the log ran ahead of the last checkpoint (end of epoch 1, step 8)
    assert [s for s, _ in read_losses(run)][-1] == 13
    assert load_checkpoint(run / "checkpoints/last.pt")["progress"]["step"] == 8
    result = train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    assert result.status == "epochs"
    _assert_same_run(run, reference.run_dir)


def test_resume_after_a_clean_mid_epoch_stop(reference, data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    config = tiny_config(checkpoint_every=2, sample_every=2, sample_per_class=1)
    first = train(
        config, data_dir=data_dir, run_dir=run, progress=False, on_step=lambda step, loss: step == 5
    )
    assert first.status == "callback" and first.step == 5
    assert load_checkpoint(run / "checkpoints/last.pt")["progress"]["batch"] == 5
    result = train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    assert result.status == "epochs" and "resuming" in capsys.readouterr().out
    _assert_same_run(run, reference.run_dir)
    again = train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    assert again.status == "already_finished" and "already finished" in capsys.readouterr().out
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, data_dir=data_dir, run_dir=run, progress=False)


def test_session_budget_stops_cleanly_and_resume_without_checkpoint_starts_fresh(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    result = train(
        tiny_config(epochs=50, tensorboard=True),
        data_dir=data_dir,
        run_dir=run,
        progress=False,
        resume=True,
        max_minutes=1e-9,
    )
    out = capsys.readouterr().out
    assert "starting a fresh run" in out and result.status == "session_budget" and result.step == 1
    assert load_checkpoint(result.last_checkpoint)["progress"]["stop_reason"] == "session_budget"
    try:  # TensorBoard events are optional: written when the package is there, skipped with a note if not
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        assert "tensorboard package is not installed" in out
    else:
        assert any((run / "tensorboard").iterdir())


# --------------------------------------------------------------------------------------- guard rails
def test_diverging_run_stops_with_the_last_good_checkpoint(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TrainStep._objective
    calls = {"n": 0}

    def poisoned(self, x, labels):
        calls["n"] += 1
        loss, bpd = original(self, x, labels)
        return (loss * float("nan"), bpd) if calls["n"] > 10 else (loss, bpd)

    monkeypatch.setattr(TrainStep, "_objective", poisoned)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="intact"):
        train(tiny_config(max_nonfinite_steps=3), data_dir=data_dir, run_dir=run, progress=False)
    state = load_checkpoint(run / "checkpoints/last.pt")
    assert state["progress"]["step"] == 8  # the end of epoch 1, before the loss went bad at step 11
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert [s for s, _ in read_losses(run)][-1] == 10


# ----------------------------------------------------------------------------------------------- CLI
def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="pcnn")
    add_train_parser(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_trains_with_overrides_and_resumes_a_finished_run(data_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "cli"
    sets = [
        "model.image_size=8",
        "model.nr_filters=8",
        "model.nr_logistic_mix=3",
        "train.epochs=1",
        "train.max_train_images=16",
        "train.batch_size=8",
        "train.eval_subset=8",
        "train.compile=off",
    ]
    argv = [
        "train",
        "--profile",
        "smoke",
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run),
        "--no-progress",
    ]
    for item in sets:
        argv += ["--set", item]
    assert _cli(argv) == 0
    assert (
        len(read_losses(run)) == 2
        and json.loads((run / "config.json").read_text())["model"]["nr_filters"] == 8
    )
    capsys.readouterr()
    assert (
        _cli(["train", "--run-dir", str(run), "--data-dir", str(data_dir), "--resume", "--no-progress"]) == 0
    )
    assert "already finished" in capsys.readouterr().out
    assert _cli(argv[:3] + ["--print-config", "--set", "train.epochs=7"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["epochs"] == 7
    assert _cli(["train", "--set", "train.nonsense=1", "--print-config"]) == 2
    assert _cli(["train", "--resume", "--data-dir", str(data_dir)]) == 2  # which run?


def test_design_doc_lists_the_profiles_as_they_are() -> None:
    from pcnn.config import profiles_markdown

    design = (REPO / "docs" / "design.md").read_text()
    assert profiles_markdown() in design, "docs/design.md#profiles table drifted: paste profiles_markdown()"


def test_ema_warms_up_then_averages_with_its_decay() -> None:
    from pcnn.training.ema import EMA

    def linear(value: float) -> torch.nn.Linear:
        layer = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            layer.weight.fill_(value)
        return layer

    model = linear(0.0)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    expected = 0.0
    for n in range(200):
        decay = min(0.99, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * 1.0
        ema.update(model)
        assert ema.module.weight.item() == pytest.approx(expected, rel=1e-6)
    assert ema.updates == 200 and ema.current_decay == pytest.approx(201 / 210)
    # The first update keeps only 10% of the initial weights; a fixed 0.9995 would keep 99.95%.
    fresh, start = linear(1.0), linear(0.0)
    slow = EMA(start, decay=0.9995)
    slow.update(fresh)
    assert slow.module.weight.item() == pytest.approx(0.9)


# ---------------------------------------------------------------------------------- likelihood first
def test_objective_at_keeps_the_likelihood_alone_before_disc_start_epoch() -> None:
    tc = TrainConfig(disc_weight=0.01, disc_start_epoch=3)
    assert [tc.objective_at(e).disc_weight for e in (0, 2, 3, 9)] == [0.0, 0.0, 0.01, 0.01]
    assert tc.objective_at(0).disc_start_epoch == 3  # the rest of the settings are kept
    long = profile("long").train
    assert long.disc_weight == 0 and profile("long").model == profile("cpu").model  # the course objective
    with pytest.raises(ValueError, match="disc_start_epoch"):
        TrainConfig(disc_start_epoch=-1)


def test_objective_at_anneals_to_the_likelihood_from_disc_end_epoch() -> None:
    tc = TrainConfig(disc_weight=0.01, disc_start_epoch=1, disc_end_epoch=3)
    assert [tc.objective_at(e).disc_weight for e in range(5)] == [0.0, 0.01, 0.01, 0.0, 0.0]
    assert [TrainConfig(disc_weight=0.01).objective_at(e).disc_weight for e in (0, 99)] == [0.01, 0.01]
    for start, end in ((0, -1), (2, 2), (3, 1)):
        with pytest.raises(ValueError, match="disc_end_epoch"):
            TrainConfig(disc_weight=0.01, disc_start_epoch=start, disc_end_epoch=end)


def test_disc_ramp_rises_linearly_over_the_warmup_from_the_start_epoch() -> None:
    tc = TrainConfig(disc_weight=0.01, disc_start_epoch=2, disc_warmup_epochs=2)
    # 4 batches per epoch: nothing before epoch 2, then 1/8, 2/8, ... of the weight, full from epoch 4 on
    assert [tc.disc_ramp(1, b, 4) for b in range(4)] == [0.0] * 4
    assert [tc.disc_ramp(2, b, 4) for b in range(4)] == [0.125, 0.25, 0.375, 0.5]
    assert [tc.disc_ramp(3, 3, 4), tc.disc_ramp(4, 0, 4), tc.disc_ramp(9, 2, 4)] == [1.0, 1.0, 1.0]
    assert TrainConfig(disc_weight=0.01).disc_ramp(0, 0, 4) == 1.0  # no warm-up: full weight at once
    with pytest.raises(ValueError, match="disc_warmup_epochs"):
        TrainConfig(disc_warmup_epochs=-1)


def assert_stopped_and_resumed_run_repeats(
    config: RunConfig, data_dir: Path, run: Path, stop_step: int, whole: Path
) -> None:
    """Stopped after step `stop_step` and resumed, a run repeats the uninterrupted `whole` step for step."""
    train(config, data_dir=data_dir, run_dir=run, progress=False, on_step=lambda s, _: s == stop_step)
    train(config, data_dir=data_dir, run_dir=run, progress=False, resume=True)
    assert read_losses(run) == read_losses(whole)


def test_a_warming_hybrid_term_logs_its_weight_and_resumes_step_for_step(
    data_dir: Path, tmp_path: Path
) -> None:
    warm = dict(epochs=2, disc_weight=0.5, disc_fraction=0.5, disc_warmup_epochs=2)
    whole = train(tiny_config(**warm), data_dir=data_dir, run_dir=tmp_path / "whole", progress=False)
    # the weight of each epoch's last step: half after the first epoch, full after the second
    assert [m["disc_weight"] for m in read_metrics(whole.run_dir)] == [0.25, 0.5]
    full = train(
        tiny_config(epochs=2, disc_weight=0.5, disc_fraction=0.5),
        data_dir=data_dir,
        run_dir=tmp_path / "full",
        progress=False,
    )
    assert read_losses(whole.run_dir)[0] < read_losses(full.run_dir)[0]  # 1/16 of the cross-entropy
    assert_stopped_and_resumed_run_repeats(
        tiny_config(**warm), data_dir, tmp_path / "resumed", 5, whole.run_dir
    )


def test_hybrid_term_joins_at_its_epoch_and_resume_after_it_repeats_the_run(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    hybrid = dict(epochs=2, disc_weight=0.5, disc_fraction=0.5, disc_start_epoch=1)
    whole = train(tiny_config(**hybrid), data_dir=data_dir, run_dir=tmp_path / "whole", progress=False)
    assert "the hybrid term joins" in capsys.readouterr().out
    lines = read_metrics(whole.run_dir)
    assert [m["disc_weight"] for m in lines] == [0.0, 0.5]
    assert lines[0]["train_loss"] == lines[0]["train_bits_per_dim"]  # the likelihood alone
    assert lines[1]["train_loss"] > lines[1]["train_bits_per_dim"]  # plus the weighted cross-entropy
    # the first epoch is the likelihood-only run's, step for step
    plain = train(
        tiny_config(epochs=1, disc_fraction=0.5),
        data_dir=data_dir,
        run_dir=tmp_path / "plain",
        progress=False,
    )
    assert read_losses(plain.run_dir) == read_losses(whole.run_dir)[:8]
    # stopped after the switch, a resumed run trains with the hybrid term from its first step
    assert_stopped_and_resumed_run_repeats(
        tiny_config(**hybrid), data_dir, tmp_path / "resumed", 11, whole.run_dir
    )


def test_hybrid_term_ends_at_its_epoch_and_resume_after_it_repeats_the_run(
    data_dir: Path, tmp_path: Path, capsys
) -> None:
    annealed = dict(epochs=3, disc_weight=0.5, disc_fraction=0.5, disc_end_epoch=1)
    whole = train(tiny_config(**annealed), data_dir=data_dir, run_dir=tmp_path / "whole", progress=False)
    assert "the hybrid term ends" in capsys.readouterr().out
    lines = read_metrics(whole.run_dir)
    assert [m["disc_weight"] for m in lines] == [0.5, 0.0, 0.0]
    assert lines[0]["train_loss"] > lines[0]["train_bits_per_dim"]  # likelihood plus cross-entropy
    assert [m["train_loss"] == m["train_bits_per_dim"] for m in lines[1:]] == [True, True]  # likelihood alone
    # stopped after the switch, a resumed run trains on the likelihood alone from its first step
    assert_stopped_and_resumed_run_repeats(
        tiny_config(**annealed), data_dir, tmp_path / "resumed", 11, whole.run_dir
    )
