"""Training-step throughput and peak memory: the trainer's step against a plain eager step, in one run.

The fast path is exactly what `pcnn train` runs (`pcnn.train.make_train_step` with a TrainConfig whose
speed switches default per device, or as given); the plain path is the straightforward formulation:
`model(x, labels)`, `dmol_nll`, autograd, `torch.optim.Adam`. Both train identically initialised
copies of the model on the same batch; their steps alternate so that load changes on a shared machine
hit both alike. On a CPU the plain step runs in a process of its own, in lockstep (one step at a time),
so that it keeps glibc's allocator defaults, as a user's straightforward loop would, while the trainer's
step tunes them for its process (`pcnn.device.keep_freed_memory`). Printed: the ratio of the median
rates, of the best steps, and the median over iterations of each plain step's time over the next fast
step's (paired: least hurt by drift).

    python benchmarks/train_step.py                      # both settings on the default device
    python benchmarks/train_step.py --precision fp32     # force the float32 fast path
    python benchmarks/train_step.py --settings 40,5,16 --steps 12 --device cuda

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcnn.config import ModelConfig, TrainConfig  # noqa: E402
from pcnn.device import resolve_device  # noqa: E402
from pcnn.likelihood import dmol_nll  # noqa: E402
from pcnn.model import build_model  # noqa: E402
from pcnn.runrecord import _cpu_name  # noqa: E402
from pcnn.train import (  # noqa: E402
    build_optimizer,
    make_train_step,
    native_bf16_cpu,
    resolve_precision,
)

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
    scale = 1.0 / (3 * model.config.image_size**2 * math.log(2.0))

    def step(x: torch.Tensor, labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = dmol_nll(x, model(x, labels)).mean() * scale
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def build_steps(
    setting: tuple[int, int, int], args: argparse.Namespace, device: torch.device, paths: tuple[str, ...]
) -> tuple[dict[str, Callable[[torch.Tensor, torch.Tensor], float]], torch.Tensor, torch.Tensor, TrainConfig]:
    """Identically initialised models, one per path, and one fixed batch of grid images."""
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
        model = build_model(ModelConfig(nr_filters=nf, nr_logistic_mix=mix)).to(device).train()
        if path == "plain":
            steps[path] = plain_step(model, torch.optim.Adam(model.parameters(), lr=2e-4))
        else:
            steps[path] = make_train_step(model, build_optimizer(model, train_config), train_config)
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


def _plain_server(setting: tuple[int, int, int], args: argparse.Namespace, threads: int, conn: Any) -> None:
    """In a process of its own: one plain step per message, answering with its time in seconds."""
    torch.set_num_threads(threads)
    steps, x, labels, _ = build_steps(setting, args, torch.device("cpu"), ("plain",))
    while conn.recv() is not None:
        start = time.perf_counter()
        steps["plain"](x, labels)
        conn.send(time.perf_counter() - start)


class _PlainProcess:
    """The plain step in a child process, called like a step; each call returns the child's step time."""

    def __init__(self, setting: tuple[int, int, int], args: argparse.Namespace) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_plain_server, args=(setting, args, torch.get_num_threads(), child), daemon=True
        )
        self.process.start()
        child.close()

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        self.conn.send(True)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


def bench_setting(
    setting: tuple[int, int, int], args: argparse.Namespace, device: torch.device
) -> dict[str, float | str | None]:
    nf, mix, batch = setting
    separate = device.type == "cpu"  # the plain step in its own process (module docstring)
    steps, x, labels, train_config = build_steps(
        setting, args, device, ("fast",) if separate else ("plain", "fast")
    )
    if separate:
        steps = {"plain": _PlainProcess(setting, args), **steps}
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
    fast_compiled = steps["fast"].compiled  # False after a compiler failure, whatever was asked
    processes = 1 + len(steps["fast"].helper_pids)
    if separate:
        steps["plain"].close()
    del steps
    rate = {name: batch / statistics.median(values) for name, values in times.items()}
    best = {name: batch / min(values) for name, values in times.items()}
    return {
        "setting": f"nf {nf}, mix {mix}, batch {batch}",
        "plain_img_s": rate["plain"],
        "fast_img_s": rate["fast"],
        "ratio": rate["fast"] / rate["plain"],
        "ratio_best": best["fast"] / best["plain"],
        # each timed plain step against the fast step right after it: drift of the machine's speed over
        # the run cancels within a pair, so this scatters less between runs than the ratio of medians
        "ratio_paired": statistics.median(a / b for a, b in zip(times["plain"], times["fast"])),
        "plain_peak_mb": peak_memory_mb(setting, "plain", args, device),
        "fast_peak_mb": peak_memory_mb(setting, "fast", args, device),
        "fast_warmup_s": warm["fast"],
        "precision": str(resolve_precision(train_config, device) or "fp32"),
        "compiled": str(fast_compiled),
        "processes": processes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), metavar="NF,MIX,BATCH")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per path (alternating)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps per path")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--fast-path", default="auto", choices=["auto", "on", "off"])
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
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}; native CPU bf16 {native_bf16_cpu()}"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
