"""Old module paths (before the subpackages) resolved to their modules, so that old imports keep working.

`install()` (called by `pcnn/__init__.py`) puts a finder first on `sys.meta_path`: importing an old path
such as `pcnn.model` imports its new home `pcnn.core.model` and registers that very module object under
the old name too, so `monkeypatch.setattr("pcnn.model.X", ...)` patches what the code reads, pickles
naming an old path load, and `python -m pcnn.pipeline` runs the new module's code. Nothing is imported
until an old path is asked for. A submodule of an aliased package follows it (`pcnn.fid.course` is
`pcnn.evaluation.fid.course`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType

ALIASES: dict[str, str] = {
    "pcnn.layers": "pcnn.core.layers",
    "pcnn.model": "pcnn.core.model",
    "pcnn.likelihood": "pcnn.core.likelihood",
    "pcnn.classify": "pcnn.core.classify",
    "pcnn.fastpath": "pcnn.fast.fastpath",
    "pcnn.convgrad": "pcnn.fast.convgrad",
    "pcnn.native": "pcnn.fast.native",
    "pcnn.core_parallel": "pcnn.fast.core_parallel",
    "pcnn.precision": "pcnn.fast.precision",
    "pcnn.data": "pcnn.datasets",
    "pcnn.train_data": "pcnn.datasets.train_data",
    "pcnn.ema": "pcnn.training.ema",
    "pcnn.checkpoint": "pcnn.training.checkpoint",
    "pcnn.finetune": "pcnn.training.finetune",
    "pcnn.distributed": "pcnn.training.distributed",
    "pcnn.device": "pcnn.training.device",
    "pcnn.train": "pcnn.training.engine",
    "pcnn.sample": "pcnn.sampling.sample",
    "pcnn.evaluate": "pcnn.evaluation.evaluate",
    "pcnn.metrics": "pcnn.evaluation.metrics",
    "pcnn.baseline": "pcnn.evaluation.baseline",
    "pcnn.analysis": "pcnn.evaluation.analysis",
    "pcnn.partial": "pcnn.evaluation.partial",
    "pcnn.temperature_sweep": "pcnn.evaluation.temperature_sweep",
    "pcnn.paired": "pcnn.evaluation.paired",
    "pcnn.course": "pcnn.evaluation.course",
    "pcnn.fid": "pcnn.evaluation.fid",
    "pcnn.pipeline": "pcnn.workflow.pipeline",
    "pcnn.experiments": "pcnn.workflow.experiments",
    "pcnn.ablate": "pcnn.workflow.ablate",
    "pcnn.runrecord": "pcnn.workflow.runrecord",
    "pcnn.colab": "pcnn.workflow.colab",
    "pcnn.gpu_smoke": "pcnn.workflow.gpu_smoke",
    "pcnn.report": "pcnn.reporting.report",
    "pcnn.plots": "pcnn.reporting.plots",
    "pcnn.export": "pcnn.reporting.export",
    "pcnn.package_map": "pcnn.reporting.package_map",
    "pcnn.cli": "pcnn.commands.cli",
    "pcnn.data_cli": "pcnn.commands.data_cli",
    "pcnn.evaluate_cli": "pcnn.commands.evaluate_cli",
    "pcnn.fid_cli": "pcnn.commands.fid_cli",
    "pcnn.sample_cli": "pcnn.commands.sample_cli",
    "pcnn.train_cli": "pcnn.commands.train_cli",
}


def resolve(name: str) -> str | None:
    """The new path of an old module path, or None when `name` is not an old path."""
    if name in ALIASES:
        return ALIASES[name]
    parent, _, child = name.rpartition(".")
    home = resolve(parent) if parent else None
    return f"{home}.{child}" if home else None


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path and loads it as the module at the new path: one module object, two names."""

    def find_spec(
        self, fullname: str, path: object = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = resolve(fullname)
        home = importlib.util.find_spec(new) if new else None
        if home is None:
            return None
        package = home.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, self, origin=home.origin, is_package=package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(resolve(spec.name))
        spec.loader_state = module.__spec__  # the import system overwrites __spec__; exec_module restores it
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = module.__spec__.loader_state

    def get_code(self, fullname: str) -> CodeType | None:
        """The new module's code: what `python -m <old path>` (runpy) runs."""
        new = resolve(fullname)
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    """Put the finder first on `sys.meta_path` (once), ahead of the path finder that would load a copy."""
    if not any(isinstance(finder, AliasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())


def old_attribute(name: str) -> ModuleType:
    """`pcnn.<name>` for an old module name (the package's `__getattr__`); AttributeError otherwise."""
    if f"pcnn.{name}" not in ALIASES:
        raise AttributeError(f"module 'pcnn' has no attribute {name!r}")
    return importlib.import_module(f"pcnn.{name}")
