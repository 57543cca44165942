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
# # 01 · Training and evaluation
#
# Trains PixelCNN++G on the profile (or resumes the run, or loads a given checkpoint), plots the
# training curves of bits/dim and accuracy, then evaluates the selected checkpoint on the validation
# split by Bayes' rule: accuracy with a bootstrap 95% interval, macro F1, the confusion matrix,
# calibration, bits/dim per class, and accuracy as a function of the fraction of the image seen.

# %% tags=["parameters"]
profile = None  # smoke | cpu | seed (docs/design.md#profiles); None: seed with a CUDA GPU, else smoke
data_dir = None  # a course-layout folder, or "synthetic"; None: see the setup cell
build_root = None  # None: Google Drive's MyDrive/pcnn/build on Colab, else <checkout>/build
run_dir = None  # None: <build root>/<profile>/runs
figures_dir = None  # None: <build root>/<profile>/figures
seed = None  # None: the profile's training seed
device = "auto"  # auto picks the GPU when there is one
sizes = {}  # overrides of the profile's stage sizes (pcnn.pipeline.StageSizes)
checkpoint = None  # a checkpoint to evaluate instead of training (e.g. checkpoints/reference.pt)
max_minutes = None  # training time of this session; the run checkpoints and Run all resumes it

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
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from pcnn import load_model
from pcnn.analysis import tta_and_prior_effects
from pcnn.checkpoint import load_checkpoint
from pcnn.data import CPEN455Dataset
from pcnn.evaluate import score_split, write_outputs
from pcnn.experiments import count_parameters, evaluate_model
from pcnn.partial import accuracy_vs_fraction
from pcnn.pipeline import notebook_context, write_result
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
print(ctx.config.to_json())

# %% [markdown]
# ## Train (or resume, or load)
# A finished run is not retrained: `train(..., resume=True)` returns at once. An unfinished one (a
# disconnected runtime, or `max_minutes` reached) resumes from its last checkpoint in the build root. The
# profile's own budget (`train.max_minutes`; `seed`: 180 min) counts over all sessions.

# %%
if checkpoint is None:
    result = train(
        ctx.config,
        data_dir=ctx.data_root,
        run_dir=ctx.paths.runs / "main",
        resume=True,
        max_minutes=max_minutes,
        progress=False,
        device=ctx.device,
    )
    print(f"status {result.status}: step {result.step}, epochs {result.epochs_completed}")
    if result.status == "session_budget":
        print(f"stopped after this session's {max_minutes} min: Run all again resumes the run")
    selected = result.best_checkpoint or result.last_checkpoint
    main_run = result.run_dir
else:
    selected = Path(checkpoint)
    main_run = selected.parent.parent  # a run folder's checkpoints/ lives in the run folder
state = load_checkpoint(selected)
metrics = read_metrics(main_run) if (main_run / "metrics.jsonl").is_file() else []
losses = read_losses(main_run) if (main_run / "train_loss.csv").is_file() else []
print(
    f"selected checkpoint {selected} (epoch {state.get('epoch')}, {state.get('selected_on', 'last weights')})"
)

# %% [markdown]
# ## Training curves


# %%
def downsample(pairs: list[tuple[int, float]], limit: int = 1500) -> dict[str, list[float]]:
    """Means over equal runs of steps, so that results JSON stays small for long runs."""
    if not pairs:
        return {"step": [], "loss": []}
    steps, values = np.asarray(pairs, dtype=float).T
    chunks = max(1, int(np.ceil(len(steps) / limit)))
    cut = len(steps) // chunks * chunks
    if chunks > 1 and cut:
        steps, values = steps[:cut].reshape(-1, chunks)[:, -1], values[:cut].reshape(-1, chunks).mean(axis=1)
    return {"step": steps.astype(int).tolist(), "loss": values.tolist()}


training = {
    "config": ctx.config.to_dict() if checkpoint is None else state.get("run_config", ctx.config.to_dict()),
    "checkpoint": str(selected),
    "device": str(ctx.device),
    "metrics": metrics,
    "loss_curve": downsample(losses),
    "steps": metrics[-1]["step"] if metrics else state.get("step"),
    "epochs": metrics[-1]["epoch"] if metrics else state.get("epoch"),
    "wall_time_s": metrics[-1].get("wall_time_s") if metrics else None,
    "selected_epoch": state.get("epoch"),
    "selected_on": state.get("selected_on", "last weights"),
}
results = {"meta": ctx.meta, "training": training}
fig, _ = render_figure("training_curves", results, ctx.paths.results, ctx.paths.figures)
display(fig)

# %% [markdown]
# ## Validation: Bayes-rule classification
# Every image is scored under each of the four labels, log p(y|x) = log p(x|y) + log p(y) - log Z with a
# uniform prior. When the checkpoint was selected on validation accuracy, these numbers are optimistic;
# `selected_on` above says which.

# %%
model = load_model(selected, device=ctx.device)
training["parameters"] = count_parameters(model)
validation = CPEN455Dataset(ctx.data_root, "validation", image_size=model.config.image_size)
scores, summary = evaluate_model(
    model,
    validation,
    subset=ctx.sizes.eval_subset,
    device=ctx.device,
    batch_size=ctx.config.train.eval_batch_size,
    progress=False,
)
write_outputs(scores, ctx.paths.results / "validation", "validation")
training["validation"] = summary
print(
    f"accuracy {100 * summary['accuracy']:.1f}% (95% CI {100 * summary['accuracy_ci95'][0]:.1f}-"
    f"{100 * summary['accuracy_ci95'][1]:.1f}) on {summary['n']} images, macro F1 {summary['macro_f1']:.3f}, "
    f"ECE {summary['ece']:.3f}, bits/dim {summary['bits_per_dim']:.3f}"
)
for name in ("confusion_matrix", "reliability", "per_class_bpd"):
    fig, _ = render_figure(name, results, ctx.paths.results, ctx.paths.figures)
    display(fig)

# %% [markdown]
# ## Test-time augmentation and the class prior
# Two options of the Bayes classifier, each measured on the same images: averaging every class
# log-likelihood over the image and its horizontal flip (the training augmentation flips), and replacing
# the uniform prior by the training split's class frequencies.

# %%
if ctx.sizes.tta_prior:
    flipped = score_split(
        model,
        validation,
        subset=ctx.sizes.eval_subset,
        device=ctx.device,
        batch_size=ctx.config.train.eval_batch_size,
        tta=True,
        progress=False,
    )
    train_counts = np.bincount(
        CPEN455Dataset(ctx.data_root, "train").labels, minlength=scores.log_likelihoods.shape[1]
    )
    training["tta_prior"] = tta_and_prior_effects(
        scores.log_likelihoods, flipped.log_likelihoods, scores.labels, train_counts
    )
    display(pd.DataFrame(training["tta_prior"]).set_index("setting"))
else:
    training["tta_prior"] = None
    print("skipped by the profile's stage sizes")

# %% [markdown]
# ## Accuracy as a function of the fraction of the image seen
# For an autoregressive model the likelihood of the first t pixels (raster order) is the sum of their
# per-pixel terms: one forward pass gives the posterior after every prefix, with no masking.

# %%
training["prefix"] = accuracy_vs_fraction(
    model, validation, subset=ctx.sizes.prefix_images, points=ctx.sizes.prefix_points, device=ctx.device
)
fig, _ = render_figure("accuracy_vs_fraction", results, ctx.paths.results, ctx.paths.figures)
display(fig)

# %% [markdown]
# ## Test split: the course submission
# Written only when the whole split is scored (profiles other than `smoke`).

# %%
test_csv = ctx.data_root / "test.csv"
if ctx.sizes.eval_subset == 0 and test_csv.is_file():
    test = CPEN455Dataset(ctx.data_root, "test", image_size=model.config.image_size)
    test_scores = score_split(model, test, device=ctx.device, progress=False)
    outputs = write_outputs(test_scores, ctx.paths.results / "test", "test")
    training["submission"] = str(outputs.get("submission"))
    print("wrote", outputs)
else:
    training["submission"] = None
    print("skipped: the profile scores a validation subset only")

# %%
write_result(ctx.paths, "training", training)
