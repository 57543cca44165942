"""The training engine: `pcnn train`, `pcnn finetune` and `train(config)` for notebooks.

The loss is the mean negative log-likelihood of the batch in **bits per dimension** (nats per image divided
by 3*H*W*ln 2), so the number in the logs is directly the bits/dim; with the hybrid objective
(`disc_weight` > 0) the cross-entropy of the Bayes posterior (nats per image) on the first
`disc_fraction` of the batch is added, weighted by `disc_weight` (its class log-likelihoods divided by
`disc_temperature`), from epoch `disc_start_epoch` on (likelihood first) until `disc_end_epoch` (then
the likelihood alone again).

Exact resume: a run's randomness is the model initialisation and dropout (torch's global generator,
seeded from `seed`) and the data order and augmentation (pure functions of seed, epoch and position, see
`pcnn.datasets.train_data`). A checkpoint holds the model, optimiser, EMA, the random states of torch,
numpy and Python, and the position in the epoch, so on the CPU a resumed run repeats the losses of an
uninterrupted one bit for bit. The learning rate is a pure function of the epoch (`lr_at`), so the
schedule needs no state of its own.

The engine's parts live beside it in `pcnn.training`, one job per module: `policy` (device choices),
`optimizer`, `step`, `rng_state`, `state` (counters and results), `run_data`, `review` (evaluation,
`best.pt`, sample grids) and `trainer` (the loop); this module is what callers import (its old path
`pcnn.train` is this module).
"""

from __future__ import annotations

from pcnn.training.optimizer import build_optimizer, lr_at
from pcnn.training.policy import (
    describe_precision,
    resolve_compile,
    resolve_precision,
    resolve_processes,
    resolve_workers,
    training_module,
)
from pcnn.training.review import evaluate_split
from pcnn.training.rng_state import capture_rng, restore_rng, seed_everything
from pcnn.training.state import FINAL_REASONS, RESUMABLE_REASONS, NonFiniteLossError, TrainResult

# `_helper_part`: the helpers of a step built before `pcnn.training` existed unpickle their part function
# as `pcnn.train._helper_part` (this module's old path), so a run started then still finds it here.
from pcnn.training.step import TrainStep, _helper_part, make_train_step  # noqa: F401
from pcnn.training.trainer import train

# its name before the split (`pcnn.workflow.ablate` uses it); `pcnn.evaluation.evaluate` is a module
evaluate = evaluate_split

__all__ = [
    "FINAL_REASONS",
    "RESUMABLE_REASONS",
    "NonFiniteLossError",
    "TrainResult",
    "TrainStep",
    "build_optimizer",
    "capture_rng",
    "describe_precision",
    "evaluate",
    "evaluate_split",
    "lr_at",
    "make_train_step",
    "resolve_compile",
    "resolve_precision",
    "resolve_processes",
    "resolve_workers",
    "restore_rng",
    "seed_everything",
    "train",
    "training_module",
]
