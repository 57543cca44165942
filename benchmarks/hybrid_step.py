"""Cost of the hybrid generative-discriminative objective: the trainer's step with and without it.

The hybrid term needs every class's log-likelihood of an image. The trainer scores only the first
`disc_fraction` of each batch under all K classes and the rest under its own label, in one forward pass
(B - n + K n images instead of B). Scoring the whole batch under every class (`disc_fraction` 1) is the
straightforward formulation. All paths run `pcnn.training.engine.make_train_step`, alternating, on one fixed
batch; the medians are compared in one run.

    python benchmarks/hybrid_step.py                     # cpu profile model (nf 40, mix 10, batch 16)
    python benchmarks/hybrid_step.py --nf 128 --mix 100 --batch 32 --fractions 0.125 0.25
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pcnn.config import ModelConfig, TrainConfig  # noqa: E402
from pcnn.core.model import build_model  # noqa: E402
from pcnn.training.engine import build_optimizer, make_train_step  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nf", type=int, default=40)
    parser.add_argument("--mix", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--disc-weight", type=float, default=0.01)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 1.0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per path")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = TrainConfig(batch_size=args.batch)
    configs = {"generative": dataclasses.replace(base, disc_weight=0.0)}
    for fraction in args.fractions:
        configs[f"hybrid, disc_fraction {fraction:g}"] = dataclasses.replace(
            base, disc_weight=args.disc_weight, disc_fraction=fraction
        )
    steps = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        model = build_model(ModelConfig(nr_filters=args.nf, nr_logistic_mix=args.mix)).train()
        steps[name] = make_train_step(model, build_optimizer(model, config), config)
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (args.batch, 3, 32, 32), generator=generator).float() / 127.5 - 1
    labels = torch.randint(0, 4, (args.batch,), generator=generator)

    for step in steps.values():
        for _ in range(args.warmup):
            step(x, labels)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            step(x, labels)
            times[name].append(time.perf_counter() - start)

    print(
        f"nf {args.nf}, mix {args.mix}, batch {args.batch}, {torch.get_num_threads()} threads, "
        f"median of {args.steps} steps per path"
    )
    reference = statistics.median(times["generative"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<32} {args.batch / median:7.1f} img/s  {median / reference:5.2f}x the generative step"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
