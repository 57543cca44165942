"""The setup cell that every notebook runs first, and what it decides (Colab or elsewhere).

A Colab runtime starts without this package, each notebook gets its own runtime, and `/content` is wiped
on disconnect. So the cell, the same in all six notebooks (`SETUP_CELL`, written into them by
`python -m pcnn.colab`), clones and installs the repository where `pcnn` is missing, then calls
`setup_runtime`: it picks the profile (`seed` with a CUDA GPU, else `smoke`), makes Google Drive the
build root on Colab, so that runs, checkpoints and results outlive the runtime and reach the next
notebook, and on Colab fetches and checks the course data unless `data_dir` is given. The synthetic set
is used on Colab only when asked for (`data_dir="synthetic"`), never as a fallback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

# The repository the setup cell clones on Colab. OWNER is a placeholder until it is published: change it
# here, then run `python -m pcnn.colab` and `make notebooks` to rewrite the six notebooks.
REPOSITORY_URL = "https://github.com/OWNER/pcnn"
CHECKOUT = "pcnn-checkout"  # clone folder under the working directory (/content on Colab)
SYNTHETIC = "synthetic"  # the `data_dir` value that chooses the generated stand-in set
DRIVE_MOUNT = Path("/content/drive")
DRIVE_BUILD = Path("MyDrive") / "pcnn" / "build"  # under DRIVE_MOUNT
COLAB_DATA_DIR = Path("/content/data/cpen455")  # local disk: reading thousands of JPEGs from Drive is slow
SETUP_TAG = "setup"

SETUP_CELL = f'''\
# Set-up, the same in every notebook (generated from pcnn/colab.py by `python -m pcnn.colab`).
# Where pcnn is not installed (a fresh Colab runtime) this clones REPO_URL and installs it. Then: the
# profile (seed with a CUDA GPU, else smoke), Google Drive as the build root on Colab (runs and results
# survive disconnects and reach the next notebook) and, on Colab, the course data fetched and checked
# unless data_dir is given (data_dir = "{SYNTHETIC}" chooses the stand-in set).
REPO_URL = "{REPOSITORY_URL}"  # the repository to clone on Colab (your fork)
import importlib.util
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("pcnn") is None:
    if "/OWNER/" in REPO_URL:
        raise RuntimeError(f"REPO_URL is still the placeholder {{REPO_URL}}: set it to your fork's URL")
    checkout = Path("{CHECKOUT}").resolve()
    if not (checkout / "pyproject.toml").is_file():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(checkout)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(checkout)], check=True)
    sys.path.insert(0, str(checkout))  # the editable install is seen by new processes only

from pcnn.colab import setup_runtime

profile, data_dir, run_dir, figures_dir = setup_runtime(
    profile, data_dir=data_dir, build_root=build_root, run_dir=run_dir, figures_dir=figures_dir, device=device
)'''


class Runtime(NamedTuple):
    """The notebook parameters after set-up (the setup cell assigns them back)."""

    profile: str
    data_dir: str | None
    run_dir: str | None
    figures_dir: str | None


def on_colab() -> bool:
    """Whether this kernel runs on Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def default_profile(device: str = "auto") -> tuple[str, str]:
    """`seed` (the GPU configuration) when `device` resolves to CUDA, else `smoke`; with the reason."""
    from pcnn.training.device import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return "seed", "a CUDA GPU is present"
    return "smoke", f"device {resolved}: the seed profile needs a CUDA GPU"


def resolve_build_root(build_root: str | Path | None, *, colab: bool) -> tuple[Path | None, str]:
    """The persistent build root and where it is: the one given, Google Drive on Colab, else None.

    None keeps the pipeline's default, `<checkout>/build`, which persists on a local machine.
    """
    if build_root is not None:
        return Path(build_root).expanduser().resolve(), "under the build root given"
    if not colab:
        return None, "the checkout's build folder"
    from google.colab import drive  # only importable on Colab

    drive.mount(str(DRIVE_MOUNT))
    return DRIVE_MOUNT / DRIVE_BUILD, "Google Drive: it outlives this runtime"


def resolve_data(data_dir: str | Path | None, *, colab: bool) -> tuple[str | None, str]:
    """The data root to pass on, and why: given, the synthetic set by name, or the course data on Colab.

    None (off Colab, or with $PCNN_DATA_DIR set) leaves the choice to `pcnn.datasets.resolve_data_dir`. On
    Colab without a data root the course data is fetched and checked; failing that, the run stops.
    """
    from pcnn.datasets import checks, download, synthetic
    from pcnn.datasets.layout import DataError
    from pcnn.datasets.location import DATA_DIR_ENV

    if data_dir == SYNTHETIC:
        return str(
            synthetic.make_synthetic(synthetic.synthetic_data_dir())
        ), "the synthetic set, chosen explicitly"
    if data_dir is not None:
        return str(Path(data_dir).expanduser().resolve()), "given"
    if os.environ.get(DATA_DIR_ENV):
        return None, f"${DATA_DIR_ENV}"
    if not colab:
        return None, f"none given: ${DATA_DIR_ENV}, else the synthetic set"
    try:
        root = download.fetch(COLAB_DATA_DIR)
    except DataError as exc:
        raise DataError(
            f"the course data could not be fetched ({exc}). Copy it to a folder and set data_dir to it, or "
            f'set data_dir = "{SYNTHETIC}" to run on the stand-in set (its numbers mean nothing)'
        ) from exc
    problems = checks.check_data_root(root, progress=False)
    if problems:
        shown = "\n  ".join(problems[:5])
        raise DataError(f"{len(problems)} problem(s) in the fetched course data {root}:\n  {shown}")
    return str(root), "the course data, fetched and checked"


def setup_runtime(
    profile: str | None,
    *,
    data_dir: str | None = None,
    build_root: str | None = None,
    run_dir: str | None = None,
    figures_dir: str | None = None,
    device: str = "auto",
) -> Runtime:
    """Resolve the profile, the build root and the data (see the module docstring) and say which and why.

    Explicit `run_dir` and `figures_dir` (the pipeline passes them) win over the build root.
    """
    import pcnn

    colab = on_colab()
    chosen, why = (profile, "given") if profile else default_profile(device)
    where = "given"
    if not (run_dir and figures_dir):
        root, where = resolve_build_root(build_root, colab=colab)
        if root is not None:
            run_dir = run_dir or str(root / chosen / "runs")
            figures_dir = figures_dir or str(root / chosen / "figures")
    data_root, source = resolve_data(data_dir, colab=colab)
    print(f"setup: pcnn {pcnn.__version__} from {Path(pcnn.__file__).parent.parent}")
    print(f"setup: profile {chosen} ({why})")
    print(f"setup: runs {run_dir or f'<checkout>/build/{chosen}/runs'} ({where})")
    print(f"setup: data {data_root or 'default'} ({source})")
    return Runtime(chosen, data_root, run_dir, figures_dir)


# --------------------------------------------------------------------------------- writing the notebooks

_CELL = re.compile(r'^# %% tags=\["setup"\]\n.*?(?=^# %%)', re.DOTALL | re.MULTILINE)


def render_setup_cell() -> str:
    """The setup cell as it appears in a jupytext percent-format notebook (marker line included)."""
    return f'# %% tags=["{SETUP_TAG}"]\n{SETUP_CELL}\n\n'


def write_setup_cells(notebooks_dir: str | Path) -> list[Path]:
    """Replace the setup cell of every `NN_name.py` notebook by `SETUP_CELL`; returns the changed files."""
    changed = []
    for path in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.py")):
        text = path.read_text()
        new, count = _CELL.subn(lambda _: render_setup_cell(), text)
        if count != 1:
            raise ValueError(f"{path}: expected one cell tagged '{SETUP_TAG}' before another, found {count}")
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main() -> int:
    """`python -m pcnn.colab`: rewrite the notebooks' setup cells from `SETUP_CELL`."""
    from pcnn.workflow.pipeline import repo_root

    root = repo_root()
    if root is None:
        print("error: run from a checkout (notebooks/ not found)", file=sys.stderr)
        return 2
    changed = write_setup_cells(root / "notebooks")
    for path in changed:
        print(f"rewrote the setup cell of {path}")
    print("setup cells up to date" if not changed else "now run `make notebooks` for the .ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
