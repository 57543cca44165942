# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#   jupytext:
#     formats: py:percent,ipynb
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Report figures and tables
#
# Writes every figure (PDF for LaTeX, PNG for the README), every table (`table_*.tex`) and the number
# macros (`macros.tex`) that `report/main.tex` includes, from the results JSON of notebooks 00-04 only.
# Nothing is typed by hand: a number in the report is a macro made here. `manifest.json` lists each
# file written, with its SHA-256, and `results.json` holds the merged results they come from, with every
# path of this machine written relative to a named folder (`<build>`, `<checkout>`, `<CPEN455 data>`):
# the reference build's figures folder is committed.

# %% tags=["parameters"]
profile = None  # smoke | cpu | seed (docs/design.md#profiles); None: seed with a CUDA GPU, else smoke
data_dir = None  # a course-layout folder, or "synthetic"; None: see the setup cell
build_root = None  # None: Google Drive's MyDrive/pcnn/build on Colab, else <checkout>/build
run_dir = None  # None: <build root>/<profile>/runs
figures_dir = None  # None: <build root>/<profile>/figures
seed = None  # None: the profile's training seed
device = "auto"  # auto picks the GPU when there is one
sizes = {}  # overrides of the profile's stage sizes (pcnn.pipeline.StageSizes)

# %% tags=["setup"]
# Set-up, the same in every notebook (generated from pcnn/colab.py by `python -m pcnn.colab`).
# Where pcnn is not installed (a fresh Colab runtime) this clones REPO_URL and installs it. Then: the
# profile (seed with a CUDA GPU, else smoke), Google Drive as the build root on Colab (runs and results
# survive disconnects and reach the next notebook) and, on Colab, the course data fetched and checked
# unless data_dir is given (data_dir = "synthetic" chooses the stand-in set).
REPO_URL = "https://github.com/OWNER/pcnn"  # the repository to clone on Colab (your fork)
import importlib.util
import subprocess
import sys
from pathlib import Path

if importlib.util.find_spec("pcnn") is None:
    if "/OWNER/" in REPO_URL:
        raise RuntimeError(f"REPO_URL is still the placeholder {REPO_URL}: set it to your fork's URL")
    checkout = Path("pcnn-checkout").resolve()
    if not (checkout / "pyproject.toml").is_file():
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, str(checkout)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", str(checkout)], check=True)
    sys.path.insert(0, str(checkout))  # the editable install is seen by new processes only

from pcnn.colab import setup_runtime

profile, data_dir, run_dir, figures_dir = setup_runtime(
    profile, data_dir=data_dir, build_root=build_root, run_dir=run_dir, figures_dir=figures_dir, device=device
)

# %%
import json
import shutil

from IPython.display import Markdown, display

from pcnn import report
from pcnn.pipeline import notebook_context, repo_root
from pcnn.runrecord import portable

ctx = notebook_context(
    profile,
    data_dir=data_dir,
    run_dir=run_dir,
    figures_dir=figures_dir,
    seed=seed,
    device=device,
    sizes=sizes,
)
meta = {**ctx.meta, "sizes": ctx.sizes.to_dict()}
results = portable(report.merge_results(ctx.paths.results, meta), ctx.record_roots)
missing = [name for name in report.RESULT_NAMES if results[name] is None]
if missing:
    raise FileNotFoundError(f"results missing for {missing}: run notebooks 00-04 first ({ctx.paths.results})")
results_path = ctx.paths.figures / "results.json"
results_path.write_text(json.dumps(results, indent=2) + "\n")

# %% [markdown]
# ## Figures

# %%
written = [results_path]
for stem in report.REPORT_FIGURES:
    fig, paths = report.render_figure(stem, results, ctx.paths.results, ctx.paths.figures)
    written += paths
    display(Markdown(f"**{stem}**"), fig)
for stem in report.OPTIONAL_FIGURES:
    target = ctx.paths.figures / f"{stem}.pdf"
    try:
        fig, paths = report.render_figure(stem, results, ctx.paths.results, ctx.paths.figures)
    except FileNotFoundError:
        for old in (target, target.with_suffix(".png")):
            old.unlink(missing_ok=True)  # a stale copy from an earlier build must not reach the report
        print(f"{stem}: not available in this build")
        continue
    written += paths
    display(Markdown(f"**{stem}**"), fig)

# %% [markdown]
# ## Tables and macros

# %%
written += report.write_tables(results, ctx.paths.figures)
print((ctx.paths.figures / "macros.tex").read_text())
print((ctx.paths.figures / "table_ablation.tex").read_text())

# %% [markdown]
# ## The test split's submission
# Notebook 01 writes the leaderboard file when it scores the whole test split; a copy goes beside the
# figures (`submission.csv`), so that publishing the build commits it with them.

# %%
submission = ctx.paths.results / "test" / "submission.csv"
copy = ctx.paths.figures / "submission.csv"
if results["training"].get("submission") and submission.is_file():
    shutil.copy2(submission, copy)
    written.append(copy)
    print("submission:", copy)
else:
    copy.unlink(missing_ok=True)  # a stale copy from an earlier build must not pass for this one's
    print("no submission in this build (the profile scores a validation subset only)")

# %% [markdown]
# ## Check: every file the report includes was written by this build

# %%
root = repo_root()
if root is not None:
    names = {path.name for path in written}
    included = report.included_files(root / "report")
    absent = [name for name in included if not ({name, f"{name}.pdf", f"{name}.tex"} & names)]
    if absent:
        raise RuntimeError(f"the report includes files this build did not write: {absent}")
    print(f"all {len(included)} included files written")
manifest = report.write_manifest(ctx.paths.figures, written, meta)
print("manifest:", manifest)
