"""Data parallelism over a CPU's cores inside one training step: helper processes take parts of the batch.

One process spreading each operation over two intra-op threads leaves part of a 2-core CPU idle: Python,
the compiled graph's wrapper and the many small element-wise kernels run between parallel regions, and
each region ends at a barrier. Two processes with one thread each, every one taking half of the batch,
made the compiled fp32 step 1.10x faster at nf 40 / mix 5 / batch 16 and 1.21x at nf 128 / mix 100 /
batch 32 on the project's 2-core CPU (alternating steps in one process;
docs/performance.md#what-the-second-process-adds).
Python threads instead of processes did not gain (0.98x): inductor's compiled kernels hold the GIL.

`CoreParallel` keeps the helpers. The model's parameters move to shared memory, so the helpers read the
weights that the main process's optimiser updates in place. Each step the main process copies the other
parts of the batch into shared buffers, computes its own part's gradient meanwhile, and adds the helpers'
gradients (returned through shared memory) in a fixed order; each helper seeds its dropout with a number
drawn from the main process's generator. So the step is deterministic, and a resumed run repeats an
uninterrupted one bit for bit, as with one process.

The helpers are started with `spawn` (fork would copy this process's OpenMP threads' state), which
normally re-imports the parent's `__main__` in every child. The helpers need nothing from it (their code
lives in `pcnn`), and re-importing it breaks where a user calls the step: from `python -` there is no
file to import, and an unguarded script (no `if __name__ == "__main__":`) would run again in the helper.
So `_main_not_reimported` hides the main module from `spawn` while the helpers start. A helper that
neither answers nor dies within `HELPER_TIMEOUT_S` is stopped and named in the error.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from pcnn.fast.precision import native_bf16_cpu

# The loss of one part: (x, labels, weight of its bits/dim, weight of its cross-entropy) -> (loss, bits/dim),
# the loss weighted as the part's share of the batch's loss, both detached, the gradient accumulated.
PartBackward = Callable[[Tensor, Tensor, float, float], tuple[Tensor, Tensor]]

# How long the main process waits for one answer of a helper before it calls the helper hung. A step of
# the `seed` width takes seconds; a helper's first step compiles its graph, which took up to 3.5 minutes
# on the 2-core CPU: fifteen minutes leaves a slow machine four times that.
HELPER_TIMEOUT_S = 900.0


def helps_on_this_cpu(capability: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """Whether a second process is measured to speed up a compiled step on this kind of CPU: on AVX2 CPUs
    (1.10-1.21x, AMD EPYC) and on AVX-512 CPUs with native bf16 (1.14x in bf16, paired medians, AMD EPYC
    with avx512_bf16), but not on AVX-512 CPUs without it (0.92x on an Intel Xeon, where oneDNN's AVX-512
    kernels keep both cores busy). Elsewhere (other architectures) it is unmeasured, so not used."""
    capability = capability or torch.backends.cpu.get_cpu_capability()
    return capability == "AVX2" or (capability == "AVX512" and native_bf16_cpu(flags))


def scored_count(batch: int, disc_fraction: float) -> int:
    """How many images of a batch (or part) the hybrid objective scores under every class."""
    return max(1, min(batch, round(disc_fraction * batch)))


def part_sizes(batch: int, parts: int) -> list[int]:
    """Near-equal part sizes, the larger first (the main process takes the first part)."""
    base, extra = divmod(batch, parts)
    return [base + (i < extra) for i in range(parts)]


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op threads, restoring the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class CoreParallel:
    """Helper processes that each compute the gradient of one part of every batch (module docstring).

    `make_part(model) -> PartBackward` builds, in a helper, what computes a part's loss and gradient for
    the helper's copy of the model (sharing the main model's parameters); it must be picklable. The
    helpers start at the first step, so building a step stays cheap.
    """

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        make_part: Callable[[nn.Module], PartBackward],
        processes: int,
        threads: int,
        disc_fraction: float | None,
        batch_size: int,
    ) -> None:
        names = {id(p): name for name, p in model.named_parameters()}
        if any(id(p) not in names for p in params):
            raise ValueError("every optimised parameter must belong to the model")
        self.model = model
        self.params = params
        self.names = [names[id(p)] for p in params]
        self.make_part = make_part
        self.processes = processes
        self.threads = threads
        self.disc_fraction = disc_fraction  # None: no hybrid term, every part's loss is its bits/dim
        self.capacity = math.ceil(batch_size / processes)  # the largest part a helper takes
        self.timeout_s = HELPER_TIMEOUT_S
        self._helpers: list[_Helper] = []

    @property
    def pids(self) -> list[int]:
        """The helper processes' ids (none before the first step)."""
        return [h.process.pid for h in self._helpers]

    def _start(self, x: Tensor, labels: Tensor) -> None:
        for p in self.model.parameters():
            p.data.share_memory_()  # in place: the optimiser keeps updating the same tensors
        context = mp.get_context("spawn")  # fork would copy this process's OpenMP threads' state
        with _main_not_reimported():
            for _ in range(self.processes - 1):
                self._helpers.append(_Helper(context, self, x, labels))
        self._finalizer = weakref.finalize(self, _stop_all, list(self._helpers))
        for helper in self._helpers:
            helper.wait_ready()

    def close(self) -> None:
        """Stop the helpers now rather than when this object is collected."""
        if self._helpers:
            self._finalizer()
            self._helpers = []

    def weights(self, sizes: list[int]) -> list[tuple[float, float]]:
        """Each part's weights of (its bits/dim, its cross-entropy) in the batch's loss: the batch's mean
        bits/dim over all images and mean cross-entropy over all scored images."""
        batch = sum(sizes)
        if self.disc_fraction is None:
            return [(n / batch, 0.0) for n in sizes]
        scored = [scored_count(n, self.disc_fraction) for n in sizes]
        return [(n / batch, s / sum(scored)) for n, s in zip(sizes, scored)]

    def backward(
        self, x: Tensor, labels: Tensor, own_part: PartBackward, ce_scale: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """The batch's (loss, bits/dim), with its gradient in the parameters' `.grad`; `ce_scale` scales
        the cross-entropy of every part (the hybrid term's warm-up)."""
        sizes = [n for n in part_sizes(x.shape[0], self.processes) if n > 0]
        if not self._helpers:
            self._start(x, labels)
        weights = [(bpd_w, ce_w * ce_scale) for bpd_w, ce_w in self.weights(sizes)]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        helpers = self._helpers[: len(sizes) - 1]
        for helper, start, n, w in zip(helpers, starts[1:], sizes[1:], weights[1:]):
            seed = int(torch.randint(2**62, ()).item())  # from this process's generator: reproducible
            helper.submit(x[start : start + n], labels[start : start + n], seed, w)
        try:
            with intra_op_threads(self.threads):
                loss, bpd = own_part(x[: sizes[0]], labels[: sizes[0]], *weights[0])
        except BaseException:
            for helper in helpers:  # collect their answers, or the next step would read these
                with contextlib.suppress(RuntimeError):
                    helper.result()
            raise
        bpd = bpd * weights[0][0]  # the parts return detached values
        for helper, w in zip(helpers, weights[1:]):
            part_loss, part_bpd = helper.result()
            loss, bpd = loss + part_loss, bpd + part_bpd * w[0]
            for p, grad in zip(self.params, helper.grads):
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad += grad
        return loss, bpd


class _Helper:
    """One helper process, its pipe, and the shared buffers of its batch part and gradient."""

    def __init__(self, context: Any, owner: CoreParallel, x: Tensor, labels: Tensor) -> None:
        self.x = torch.empty((owner.capacity, *x.shape[1:]), dtype=x.dtype).share_memory_()
        self.labels = torch.empty(owner.capacity, dtype=labels.dtype).share_memory_()
        flat = torch.zeros(sum(p.numel() for p in owner.params)).share_memory_()
        self.grads = _views(flat, owner.params)
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve,
            args=(owner.model, owner.names, owner.make_part, owner.threads, child, self.x, self.labels, flat),
            name="pcnn-step-helper",
        )
        self.process.start()
        child.close()
        self.timeout_s = owner.timeout_s

    def _receive(self) -> Any:
        try:
            self._wait_for_answer()
            message = self.conn.recv()
        except (EOFError, ConnectionError) as error:
            raise RuntimeError(
                f"a training helper process (pid {self.process.pid}) died; see its error output above"
            ) from error
        if isinstance(message, tuple) and message and message[0] == "error":
            raise RuntimeError(f"a training helper process failed:\n{message[1]}")
        return message

    def _wait_for_answer(self) -> None:
        """Return once the helper has answered or died; stop it and fail when it does neither in time."""
        deadline = time.monotonic() + self.timeout_s
        while not self.conn.poll(min(1.0, self.timeout_s)):
            if not self.process.is_alive():
                return  # the pipe is closed: recv raises EOFError, reported as a dead helper
            if time.monotonic() >= deadline:
                self.process.kill()  # SIGKILL: a stopped or deadlocked process ignores SIGTERM
                self.process.join(timeout=10)
                raise RuntimeError(
                    f"a training helper process (pid {self.process.pid}) gave no answer within "
                    f"{self.timeout_s:.0f} s and was stopped; the step failed (a checkpointed run resumes "
                    "with --resume; train.cpu_processes=1 trains without helpers)"
                )

    def wait_ready(self) -> None:
        self._receive()

    def submit(self, x: Tensor, labels: Tensor, seed: int, weights: tuple[float, float]) -> None:
        if x.shape[0] > self.x.shape[0] or x.shape[1:] != self.x.shape[1:]:
            raise ValueError(
                f"a batch part of shape {tuple(x.shape)} does not fit the helpers' buffers "
                f"{tuple(self.x.shape)}: batches may not exceed train.batch_size, nor images change size"
            )
        n = x.shape[0]
        self.x[:n].copy_(x)
        self.labels[:n].copy_(labels)
        self.conn.send((n, seed, weights))

    def result(self) -> tuple[Tensor, Tensor]:
        """The part's (weighted loss, own bits/dim), once the helper has answered."""
        loss, bpd = self._receive()
        return torch.tensor(loss), torch.tensor(bpd)


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While the block starts processes, `spawn` finds no main module to re-import (module docstring)."""
    main = sys.modules.get("__main__")
    hidden = {
        k: main.__dict__.pop(k) for k in ("__spec__", "__file__") if main is not None and k in main.__dict__
    }
    if main is not None:
        main.__spec__ = None  # spawn reads the attribute; None means "not imported from a module"
    try:
        yield
    finally:
        if main is not None:
            del main.__spec__
            main.__dict__.update(hidden)


def _views(flat: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """`flat` cut into one view shaped like each parameter, in order."""
    return [piece.view_as(p) for piece, p in zip(flat.split([p.numel() for p in params]), params)]


def _stop_all(helpers: list[_Helper]) -> None:
    for helper in helpers:
        with contextlib.suppress(OSError):
            helper.conn.send(None)
    for helper in helpers:
        helper.process.join(timeout=10)
        if helper.process.is_alive():
            helper.process.terminate()


def _serve(
    model: nn.Module,
    names: list[str],
    make_part: Callable[[nn.Module], PartBackward],
    threads: int,
    conn: Any,
    x_buffer: Tensor,
    label_buffer: Tensor,
    grad_buffer: Tensor,
) -> None:
    """A helper's loop: per message (part size, seed, weights), the part's gradient into `grad_buffer`."""
    try:
        torch.set_num_threads(threads)
        by_name = dict(model.named_parameters())
        params = [by_name[name] for name in names]
        grads = _views(grad_buffer, params)
        part_backward = make_part(model)
        conn.send("ready")
        while (message := conn.recv()) is not None:
            n, seed, weights = message
            torch.manual_seed(seed)
            for p in params:
                p.grad = None
            loss, bpd = part_backward(x_buffer[:n], label_buffer[:n], *weights)
            for grad, p in zip(grads, params):
                if p.grad is None:
                    grad.zero_()
                else:
                    grad.copy_(p.grad)
            conn.send((loss.item(), bpd.item()))
    except EOFError:  # the main process is gone
        return
    except BaseException:  # noqa: BLE001 - reported to the main process, which raises it
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
