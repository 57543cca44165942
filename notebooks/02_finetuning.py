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
# # 02 · Fine-tuning
#
# The original report's fine-tuning pipeline, from the checkpoint of `01_training`: a reduced learning
# rate, colour jitter and random crops added to the augmentation, the weakest class drawn with 90% of
# each epoch's draws, and a held-out part of the *training* split that selects the checkpoint, so the
# validation split stays untouched for the comparison with the base model. The weakest class is found
# on training images too, for the same reason.

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
import numpy as np
from IPython.display import display

from pcnn import load_model, plots
from pcnn.ablate import describe_budget
from pcnn.data import CLASS_NAMES, CPEN455Dataset
from pcnn.experiments import evaluate_model
from pcnn.finetune import LR_FACTOR, finetune_config
from pcnn.pipeline import notebook_context, read_result, write_result
from pcnn.report import render_figure
from pcnn.runrecord import read_losses, read_metrics
from pcnn.train import train

ctx = notebook_context(
    profile,
    data_dir=data_dir,
    run_dir=run_dir,
    figures_dir=figures_dir,
    seed=seed,
    device=device,
    sizes=sizes,
)
base_training = read_result(ctx.paths, "training")
base_checkpoint = base_training["checkpoint"]
print("base checkpoint:", base_checkpoint)

# %% [markdown]
# ## The weakest class, measured on training images

# %%
base = load_model(base_checkpoint, device=ctx.device)
train_split = CPEN455Dataset(ctx.data_root, "train", image_size=base.config.image_size)
subset = ctx.sizes.eval_subset or len(train_split)
_, train_summary = evaluate_model(base, train_split, subset=subset, device=ctx.device, progress=False)
per_class = train_summary["per_class_accuracy"]
weakest = min(per_class, key=lambda name: per_class[name] if per_class[name] is not None else 1.0)
focus = [CLASS_NAMES.index(weakest)]
print({k: round(v, 3) for k, v in per_class.items() if v is not None}, "-> focus on", weakest)

# %% [markdown]
# ## Fine-tune

# %%
budget = ctx.sizes.finetune_budget
overrides = [
    f"train.max_steps={int(budget.get('max_steps', 0))}",
    f"train.max_minutes={float(budget.get('max_minutes', 0.0))}",
]
if budget.get("epochs"):
    overrides.append(f"train.epochs={int(budget['epochs'])}")
config = finetune_config(
    base_checkpoint, overrides, classes=",".join(map(str, focus)), holdout=ctx.sizes.finetune_holdout
)
print(
    f"learning rate {config.train.lr:.2e} ({LR_FACTOR} x the checkpoint's last), "
    f"budget {describe_budget(budget)}"
)
result = train(
    config,
    data_dir=ctx.data_root,
    run_dir=ctx.paths.runs / "finetune",
    resume=True,
    progress=False,
    device=ctx.device,
)
tuned_checkpoint = result.best_checkpoint or result.last_checkpoint
print(f"status {result.status}: step {result.step}; selected {tuned_checkpoint}")

# %% [markdown]
# ## Base model and fine-tuned model on the validation split

# %%
validation = CPEN455Dataset(ctx.data_root, "validation", image_size=base.config.image_size)
tuned = load_model(tuned_checkpoint, device=ctx.device)
_, tuned_summary = evaluate_model(
    tuned, validation, subset=ctx.sizes.eval_subset, device=ctx.device, progress=False
)
base_summary = base_training["validation"]
for label, s in (("base", base_summary), ("fine-tuned", tuned_summary)):
    print(
        f"{label:>10}: accuracy {100 * s['accuracy']:.1f}% [{100 * s['accuracy_ci95'][0]:.1f}, "
        f"{100 * s['accuracy_ci95'][1]:.1f}], macro F1 {s['macro_f1']:.3f}, bits/dim {s['bits_per_dim']:.3f}"
    )

finetune = {
    "base_checkpoint": base_checkpoint,
    "checkpoint": str(tuned_checkpoint),
    "config": config.to_dict(),
    "budget": describe_budget(budget),
    "lr_factor": LR_FACTOR,
    "holdout": ctx.sizes.finetune_holdout,
    "focus_classes": focus,
    "focus_names": [CLASS_NAMES[k] for k in focus],
    "train_per_class_accuracy": per_class,
    "steps": result.step,
    "metrics": read_metrics(result.run_dir),
    "base": {
        k: base_summary[k]
        for k in ("accuracy", "accuracy_ci95", "macro_f1", "bits_per_dim", "n", "per_class_accuracy")
    },
    "finetuned": {
        k: tuned_summary[k]
        for k in ("accuracy", "accuracy_ci95", "macro_f1", "bits_per_dim", "n", "per_class_accuracy")
    },
}
write_result(ctx.paths, "finetune", finetune)
fig, _ = render_figure(
    "finetune_comparison", {"meta": ctx.meta, "finetune": finetune}, ctx.paths.results, ctx.paths.figures
)
display(fig)

# %% [markdown]
# ## Fine-tuning curves
# Held-out bits/dim and accuracy select the checkpoint; validation is shown for reference only.

# %%
losses = read_losses(result.run_dir)
fig = plots.training_curves_figure(losses, finetune["metrics"], "Fine-tuning curves")
plots.save_figure(fig, ctx.paths.figures / "finetune_curves")
display(fig)
print(
    "held-out accuracy per evaluation:",
    [round(m["holdout_accuracy"], 3) for m in finetune["metrics"] if m.get("holdout_accuracy") is not None],
)
print(
    "mean change in per-class validation accuracy:",
    np.round(
        np.nanmean(
            [
                (tuned_summary["per_class_accuracy"][k] or np.nan)
                - (base_summary["per_class_accuracy"][k] or np.nan)
                for k in CLASS_NAMES
            ]
        ),
        3,
    ),
)
