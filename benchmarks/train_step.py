"""Training-step throughput and peak memory: the trainer's step against a plain eager step, in one run.

The fast path is exactly what `pcnn train` runs (`pcnn.training.engine.make_train_step` with a TrainConfig
whose speed switches default per device, or as given); the plain path is the straightforward formulation:
`model(x, labels)`, `dmol_nll`, autograd, `torch.optim.Adam`. Both train identically initialised
copies of the model on the same batch; their steps alternate so that load changes on a shared machine
hit both alike. On a CPU the plain step runs in a process of its own, in lockstep (one step at a time),
so that it keeps glibc's allocator defaults, as a user's straightforward loop would, while the trainer's
step tunes them for its process (`pcnn.training.device.keep_freed_memory`). Printed: the ratio of the median
rates, of the best steps, and the median over iterations of each plain step's time over the next fast
step's (paired: least hurt by drift).

    python benchmarks/train_step.py                      # both settings on the default device
    python benchmarks/train_step.py --precision fp32     # force the float32 fast path
    python benchmarks/train_step.py --settings 40,5,16 --steps 12 --device cuda
    python benchmarks/train_step.py --settings --profile-set train.cpu_processes=1   # the profile only

Last, it times the `cpu` profile's default step (`pcnn train --profile cpu`, untouched unless
`--profile-set`) against a straightforward eager step of the course's formulation (`course_dmol_loss`),
and prints the precision the default chose and why.

Peak memory: what one step needs above the memory that the model and optimiser hold: CUDA's allocator
peak on a GPU; on Linux CPUs the peak resident set of a fresh process per path (reset through
/proc/self/clear_refs after a first step); "n/a" elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcnn.config import ModelConfig, RunConfig, TrainConfig, apply_overrides, profile  # noqa: E402
from pcnn.core.likelihood import bits_per_dim_scale, dmol_nll  # noqa: E402
from pcnn.core.model import build_model  # noqa: E402
from pcnn.fast.core_parallel import scored_count  # noqa: E402
from pcnn.fast.precision import native_bf16_cpu  # noqa: E402
from pcnn.training.device import resolve_device  # noqa: E402
from pcnn.training.engine import (  # noqa: E402
    TrainStep,
    build_optimizer,
    describe_precision,
    make_train_step,
    resolve_precision,
)
from pcnn.workflow.runrecord import _cpu_name  # noqa: E402

SETTINGS = ("40,5,16", "128,100,32")  # nr_filters, nr_logistic_mix, batch size


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_mb(field: str, pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def plain_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The straightforward eager step of this project's model and likelihood."""
    scale = bits_per_dim_scale(model.config.image_size)

    def step(x: torch.Tensor, labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = dmol_nll(x, model(x, labels)).mean() * scale
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def course_dmol_loss(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """The course's training loss, as its reference code formulates it (Salimans et al.'s original): the
    batch's summed NLL in nats, with the pdf-midpoint approximation in low-probability bins and
    condition masks instead of `torch.where`. Same parameter layout as `pcnn.core.likelihood`."""
    m = params.shape[1] // 10
    x = x.permute(0, 2, 3, 1)  # B, H, W, 3
    params = params.permute(0, 2, 3, 1)
    logits = params[..., :m]
    rest = params[..., m:].reshape(*x.shape, 3 * m)  # B, H, W, 3 colours, (means, log-scales, coefficients)
    means, log_scales = rest[..., :m], rest[..., m : 2 * m].clamp(min=-7.0)
    coeffs = torch.tanh(rest[..., 2 * m :])
    x = x.unsqueeze(-1).expand(*x.shape, m)
    mean_g = means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]
    mean_b = means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]
    means = torch.stack([means[..., 0, :], mean_g, mean_b], dim=3)
    centered = x - means
    inv_scale = torch.exp(-log_scales)
    plus_in, min_in = inv_scale * (centered + 1 / 255), inv_scale * (centered - 1 / 255)
    cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)  # the lowest bin
    log_one_minus_cdf_min = -F.softplus(min_in)  # the highest bin
    mid_in = inv_scale * centered
    log_pdf_mid = mid_in - log_scales - 2 * F.softplus(mid_in)
    wide = (cdf_delta > 1e-5).float()
    inner = wide * torch.log(cdf_delta.clamp(min=1e-12)) + (1 - wide) * (log_pdf_mid - math.log(127.5))
    top = (x > 0.999).float()
    inner = top * log_one_minus_cdf_min + (1 - top) * inner
    bottom = (x < -0.999).float()
    log_probs = bottom * log_cdf_plus + (1 - bottom) * inner
    log_probs = log_probs.sum(dim=3) + F.log_softmax(logits, dim=-1)
    return -torch.logsumexp(log_probs, dim=-1).sum()


def course_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> Callable[[torch.Tensor, torch.Tensor], float]:
    """The straightforward eager step of the course's formulation: model, its loss, autograd, Adam."""

    def step(x: torch.Tensor, labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = course_dmol_loss(x, model(x, labels))
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def build_steps(
    setting: tuple[int, int, int], args: argparse.Namespace, device: torch.device, paths: tuple[str, ...]
) -> tuple[dict[str, Callable[[torch.Tensor, torch.Tensor], float]], torch.Tensor, torch.Tensor, TrainConfig]:
    """Identically initialised models, one per path, and one fixed batch of grid images. Paths: `plain`
    and `fast` (this setting, the switches given), `course` and `profile` (the `cpu` profile's model; the
    course's formulation, and the profile's own training config untouched)."""
    nf, mix, batch = setting
    train_config = dataclasses.replace(
        TrainConfig(batch_size=batch),
        precision=args.precision,
        compile=args.compile,
        fast_path=args.fast_path,
    )
    steps = {}
    for path in paths:
        torch.manual_seed(0)
        if path in ("course", "profile"):
            model_config, path_config = cpu_profile(args).model, cpu_profile(args).train
        else:
            model_config, path_config = ModelConfig(nr_filters=nf, nr_logistic_mix=mix), train_config
        model = build_model(model_config).to(device).train()
        if path == "plain":
            steps[path] = plain_step(model, torch.optim.Adam(model.parameters(), lr=2e-4))
        elif path == "course":
            steps[path] = course_step(model, torch.optim.Adam(model.parameters(), lr=2e-4))
        else:
            steps[path] = make_train_step(model, build_optimizer(model, path_config), path_config)
            train_config = path_config
    generator = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 256, (batch, 3, 32, 32), generator=generator).float() / 127.5 - 1).to(device)
    labels = torch.randint(0, 4, (batch,), generator=generator).to(device)
    return steps, x, labels, train_config


def peak_memory_mb(
    setting: tuple[int, int, int], path: str, args: argparse.Namespace, device: torch.device
) -> float | None:
    """Memory a step needs above what the model and optimiser hold: CUDA's allocator peak on a GPU; on a
    Linux CPU the peak resident set of a fresh process (so the other path's freed memory cannot hide it)."""
    if device.type == "cuda":
        steps, x, labels, _ = build_steps(setting, args, device, (path,))
        steps[path](x, labels)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        steps[path](x, labels)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if _status_mb("VmHWM") is None:
        return None
    command = [
        sys.executable,
        __file__,
        "--memory-of",
        path,
        "--settings",
        ",".join(map(str, setting)),
        "--device",
        str(device),
        "--precision",
        args.precision,
        "--compile",
        args.compile,
        "--fast-path",
        args.fast_path,
        "--threads",
        str(torch.get_num_threads()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return float(done.stdout.split()[-1]) if done.returncode == 0 else None


def _memory_child(
    setting: tuple[int, int, int], path: str, args: argparse.Namespace, device: torch.device
) -> None:
    # glibc's defaults, which hand freed blocks back, so that the resident set before the measured step does
    # not already hold the memory that the trainer's process keeps for reuse (`keep_freed_memory`)
    os.environ["PCNN_KEEP_FREED_MEMORY"] = "0"
    steps, x, labels, _ = build_steps(setting, args, device, (path,))
    steps[path](x, labels)  # Adam's state appears on the first step; helper processes start
    pids = ["self", *getattr(steps[path], "helper_pids", [])]  # a step's helpers count too
    before = [_status_mb("VmRSS", pid) for pid in pids]
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets the peak resident set (Linux)
    steps[path](x, labels)
    print(sum(_status_mb("VmHWM", pid) - rss for pid, rss in zip(pids, before)))


def _plain_server(
    setting: tuple[int, int, int], args: argparse.Namespace, path: str, threads: int, conn: Any
) -> None:
    """In a process of its own: one step of `path` per message, answering with its time in seconds."""
    torch.set_num_threads(threads)
    steps, x, labels, _ = build_steps(setting, args, torch.device("cpu"), (path,))
    while conn.recv() is not None:
        start = time.perf_counter()
        steps[path](x, labels)
        conn.send(time.perf_counter() - start)


class _PlainProcess:
    """A straightforward step in a child process, called like a step; each call returns its step time."""

    def __init__(self, setting: tuple[int, int, int], args: argparse.Namespace, path: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_plain_server, args=(setting, args, path, torch.get_num_threads(), child), daemon=True
        )
        self.process.start()
        child.close()

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        self.conn.send(True)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


def time_paths(
    setting: tuple[int, int, int],
    args: argparse.Namespace,
    device: torch.device,
    baseline: str,
    candidate: str,
) -> tuple[dict[str, list[float]], dict[str, float], TrainStep, TrainConfig]:
    """Alternating timed steps of a straightforward `baseline` path and the trainer's `candidate` path:
    (step times, warm-up times, the candidate's step, its config)."""
    separate = device.type == "cpu"  # the straightforward step in its own process (module docstring)
    steps, x, labels, train_config = build_steps(
        setting, args, device, (candidate,) if separate else (baseline, candidate)
    )
    if separate:
        steps = {baseline: _PlainProcess(setting, args, baseline), **steps}
    warm: dict[str, float] = {}
    for name, step in steps.items():  # first calls: allocation, cuDNN autotuning, compilation
        start = time.perf_counter()
        for _ in range(args.warmup):
            step(x, labels)
        _sync(device)
        warm[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            returned = step(x, labels)  # the plain process returns its own step time; a step, its loss
            _sync(device)
            elapsed = time.perf_counter() - start
            times[name].append(returned if isinstance(step, _PlainProcess) else elapsed)
    if separate:
        steps[baseline].close()
    return times, warm, steps[candidate], train_config


def ratios(times: dict[str, list[float]], batch: int, baseline: str, candidate: str) -> dict[str, float]:
    rate = {name: batch / statistics.median(values) for name, values in times.items()}
    best = {name: batch / min(values) for name, values in times.items()}
    return {
        "plain_img_s": rate[baseline],
        "fast_img_s": rate[candidate],
        "ratio": rate[candidate] / rate[baseline],
        "ratio_best": best[candidate] / best[baseline],
        # each timed baseline step against the candidate step right after it: drift of the machine's
        # speed over the run cancels within a pair, so this scatters less between runs than the medians
        "ratio_paired": statistics.median(a / b for a, b in zip(times[baseline], times[candidate])),
    }


def bench_setting(
    setting: tuple[int, int, int], args: argparse.Namespace, device: torch.device
) -> dict[str, float | str | None]:
    nf, mix, batch = setting
    times, warm, fast, train_config = time_paths(setting, args, device, "plain", "fast")
    return {
        "setting": f"nf {nf}, mix {mix}, batch {batch}",
        **ratios(times, batch, "plain", "fast"),
        "plain_peak_mb": peak_memory_mb(setting, "plain", args, device),
        "fast_peak_mb": peak_memory_mb(setting, "fast", args, device),
        "fast_warmup_s": warm["fast"],
        "precision": str(resolve_precision(train_config, device) or "fp32"),
        "compiled": str(fast.compiled),  # False after a compiler failure, whatever was asked
        "processes": 1 + len(fast.helper_pids),
    }


def cpu_profile(args: argparse.Namespace) -> RunConfig:
    """The `cpu` profile as `pcnn train --profile cpu` runs it, with the `--profile-set` overrides."""
    return apply_overrides(profile("cpu"), args.profile_set)


def bench_profile_against_course(args: argparse.Namespace, device: torch.device) -> None:
    """The `cpu` profile's default step (untouched unless `--profile-set`) against the course's
    straightforward formulation; then, where the profile trains the hybrid objective, the same step on
    the course's objective (`train.disc_weight=0`), which does the same work per image as the course's."""
    variants = [args]
    if cpu_profile(args).train.disc_weight > 0:
        variants.append(
            argparse.Namespace(**{**vars(args), "profile_set": [*args.profile_set, "train.disc_weight=0"]})
        )
    for variant in variants:
        run = cpu_profile(variant)
        tc = run.train
        setting = (run.model.nr_filters, run.model.nr_logistic_mix, tc.batch_size)
        times, warm, step, _ = time_paths(setting, variant, device, "course", "profile")
        r = ratios(times, tc.batch_size, "course", "profile")
        scored = tc.batch_size
        if tc.disc_weight > 0:  # the hybrid term scores part of the batch under every class
            scored += scored_count(tc.batch_size, tc.disc_fraction) * (run.model.num_classes - 1)
        overrides = " ".join(variant.profile_set) or "none"
        print(
            f"\n`pcnn train --profile cpu` step (overrides: {overrides}; nf {setting[0]}, mix {setting[1]}, "
            f"batch {setting[2]}, {scored} image-class scores per step) against the course's formulation "
            f"(eager model, the course's loss, Adam; {tc.batch_size} scores per step):\n"
            f"  course {r['plain_img_s']:.2f} img/s, default {r['fast_img_s']:.2f} img/s: {r['ratio']:.2f}x "
            f"(best {r['ratio_best']:.2f}x, paired {r['ratio_paired']:.2f}x); per image-class score "
            f"{r['ratio'] * scored / tc.batch_size:.2f}x\n"
            f"  its step: compiled {step.compiled}, processes {1 + len(step.helper_pids)}, "
            f"warm-up {warm['profile']:.1f} s; precision {describe_precision(tc, device)}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--settings",
        nargs="*",
        default=list(SETTINGS),
        metavar="NF,MIX,BATCH",
        help="fast against plain at these sizes (none: only the profile against the course)",
    )
    parser.add_argument("--steps", type=int, default=6, help="timed steps per path (alternating)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per path")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--fast-path", default="auto", choices=["auto", "on", "off"])
    parser.add_argument(
        "--course", choices=["on", "off"], default="on", help="also time the `cpu` profile against the course"
    )
    parser.add_argument(
        "--profile-set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override a field of the `cpu` profile in that comparison, e.g. train.cpu_processes=1",
    )
    parser.add_argument("--memory-of", choices=["plain", "fast"], help=argparse.SUPPRESS)  # internal
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    settings = [tuple(int(v) for v in text.split(",")) for text in args.settings]
    if args.memory_of:
        _memory_child(settings[0], args.memory_of, args, device)
        return 0
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(
        f"device {device} ({name}); torch {torch.__version__}; {torch.get_num_threads()} threads; "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native CPU bf16 {native_bf16_cpu()}\n"
        f"precision of the fast path: {describe_precision(TrainConfig(precision=args.precision), device)}"
    )
    header = (
        f"{'setting':<28} {'plain img/s':>11} {'fast img/s':>10} {'ratio':>6} {'(best)':>6} {'paired':>6} "
        f"{'plain MB':>9} {'fast MB':>8}  fast path"
    )
    print(header)
    for setting in settings:
        r = bench_setting(setting, args, device)

        def mb(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.0f}"

        print(
            f"{r['setting']:<28} {r['plain_img_s']:>11.2f} {r['fast_img_s']:>10.2f} {r['ratio']:>5.2f}x "
            f"{r['ratio_best']:>5.2f}x {r['ratio_paired']:>5.2f}x "
            f"{mb(r['plain_peak_mb']):>9} {mb(r['fast_peak_mb']):>8}  "
            f"{r['precision']}, compiled {r['compiled']}, processes {r['processes']}, "
            f"warm-up {r['fast_warmup_s']:.1f} s",
            flush=True,
        )
    if args.course == "on":
        bench_profile_against_course(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
