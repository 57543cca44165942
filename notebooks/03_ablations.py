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
# # 03 · Ablations: how the label enters the network
#
# Every conditioning variant of docs/design.md#conditioning (`none`, `gated-bias`, `single-matrix`,
# `per-layer-input`, `spatial`, `label-channel`, `film`) plus the main model with Polyak averaging,
# trained on one budget and seed from the same initialisation seed, and compared on validation accuracy
# (bootstrap 95% interval), macro F1, bits/dim and course-protocol FID. The comparison uses the weights at
# the end of the budget, not a checkpoint selected on validation. Finished variants are not retrained.
# The `seed` profile compares them on the original report's reduced model (nr_filters 40, mix 10; the
# stage size `ablation_overrides`): nine variants of its full model would cost nine main runs.

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
import pandas as pd
from IPython.display import display

from pcnn.ablate import describe_budget, paired_effect, run_ablation
from pcnn.pipeline import notebook_context, write_result
from pcnn.report import render_figure

ctx = notebook_context(
    profile,
    data_dir=data_dir,
    run_dir=run_dir,
    figures_dir=figures_dir,
    seed=seed,
    device=device,
    sizes=sizes,
)
ablation_base = ctx.ablation_config
print(
    f"budget per variant: {describe_budget(ctx.sizes.ablation_budget)}, on nr_filters "
    f"{ablation_base.model.nr_filters}, nr_logistic_mix {ablation_base.model.nr_logistic_mix}"
)

# %% [markdown]
# ## Train and evaluate every variant

# %%
rows = run_ablation(
    ablation_base,
    out_dir=ctx.paths.runs / "ablation",
    budget=ctx.sizes.ablation_budget,
    data_dir=ctx.data_root,
    variants=ctx.sizes.ablation_variants,
    seed=ctx.config.train.seed,
    eval_subset=ctx.sizes.ablation_eval_subset,
    fid_per_class=ctx.sizes.ablation_fid_per_class,
    fid_seeds=ctx.seeds(ctx.sizes.ablation_fid_seeds),
    polyak_decay=ctx.sizes.ablation_polyak_decay,
    device=ctx.device,
    progress=False,
)
write_result(ctx.paths, "ablation", rows)

# %% [markdown]
# ## Comparison
# `none` is the unconditional PixelCNN++: it has no classifier (n/a) and is the baseline for bits/dim.

# %%
table = pd.DataFrame(rows).set_index("name")
shown = table[
    [
        "val_accuracy",
        "val_accuracy_ci",
        "val_f1",
        "val_bpd",
        "fid_course_mean",
        "fid_course_std",
        "steps",
        "budget",
    ]
]
display(shown)
fig, _ = render_figure("ablation", {"meta": ctx.meta, "ablation": rows}, ctx.paths.results, ctx.paths.figures)
display(fig)

# %% [markdown]
# ## Polyak averaging and the hybrid objective
# Each pair is the same model, budget and seed: `+polyak` evaluates the exponential moving average of
# the weights; `+hybrid` adds the discriminative term `disc_weight * CE(posterior, label)` to the loss
# (`+generative` removes it when the profile trains with it), and still classifies by Bayes' rule.

# %%
effects = {}
for base, other in [
    ("gated-bias", "gated-bias+polyak"),
    ("gated-bias", "gated-bias+hybrid"),
    ("gated-bias", "gated-bias+generative"),
]:
    effect = paired_effect(rows, base, other)
    if effect is None:
        continue
    effects[other] = effect
    acc = effect["accuracy_change"]
    print(
        f"{base} -> {other}: validation accuracy {acc * 100:+.1f} points, "
        f"bits/dim {effect['bpd_change']:+.4f}"
        if acc is not None
        else f"{base} -> {other}: bits/dim {effect['bpd_change']:+.4f}"
    )
if not effects:
    print("paired comparisons skipped: the variants they need were not run")
write_result(ctx.paths, "ablation_effects", effects)
