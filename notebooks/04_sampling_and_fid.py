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
# # 04 · Sampling and FID
#
# Samples of every class from the model of `01_training` (the exact cached sampler), FID under both
# protocols of docs/design.md#fid-and-kid beside the real-data floor, and the speed of the naive and cached
# samplers. Course protocol: 25 samples per class saved as the course's JPEGs against the test folder,
# Inception dims 192, mean and standard deviation over sampling seeds. Matched protocol: as many samples
# as real training images (250 per class) at 32x32, dims 2048, with KID (unbiased at these counts).
# Small profiles use fewer samples: their FID is not meaningful. Without Inception weights FID is not
# measured, and this notebook says so instead of printing a number.

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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from IPython.display import display

from pcnn import fid, load_model
from pcnn.analysis import class_consistency, nearest_neighbour_grid, nearest_neighbours
from pcnn.baseline import baseline_predict, train_baseline
from pcnn.data import CLASS_NAMES, CPEN455Dataset, class_counts
from pcnn.experiments import course_fid_over_seeds, draw_class_samples, inception_status, sampler_speed
from pcnn.pipeline import notebook_context, read_result, reference_checkpoint, write_result
from pcnn.plots import per_class_indices, read_sample_grids, samples_by_class, to_uint8_hwc
from pcnn.report import judge_per_class, render_figure
from pcnn.sample import complete

ctx = notebook_context(
    profile,
    data_dir=data_dir,
    run_dir=run_dir,
    figures_dir=figures_dir,
    seed=seed,
    device=device,
    sizes=sizes,
)
sz = ctx.sizes
checkpoint = read_result(ctx.paths, "training")["checkpoint"]
model = load_model(checkpoint, device=ctx.device)
print("model:", checkpoint)


def save_samples(name: str, images: torch.Tensor, labels: torch.Tensor, per_class: int) -> None:
    """Keep the first `per_class` images of each class (uint8) for the report's grids."""
    keep = torch.cat([torch.nonzero(labels == k).flatten()[:per_class] for k in labels.unique()])
    np.savez_compressed(
        ctx.paths.results / f"{name}.npz",
        images=to_uint8_hwc(images[keep]).transpose(0, 3, 1, 2),
        labels=labels[keep].numpy(),
    )


# %% [markdown]
# ## FID, course protocol, beside its real-data floor

# %%
available, note = inception_status()
print(note if not available else "Inception weights available")
sampling: dict = {
    "checkpoint": checkpoint,
    "fid": {"available": available, "note": note if not available else None},
}
grid_images = grid_labels = None
if available:
    course, grid_images, grid_labels = course_fid_over_seeds(
        model,
        ctx.data_root,
        sz.course_per_class,
        ctx.seeds(sz.fid_seeds),
        device=ctx.device,
        batch_size=sz.sample_batch,
    )
    floor_per_class = min(sz.course_per_class, *class_counts(ctx.data_root, "validation"))
    floor = fid.course_floor(
        ctx.data_root,
        192,
        n_per_class=floor_per_class,
        seeds=list(range(sz.course_floor_seeds)),
        device=ctx.device,
        progress=False,
    )
    floor_summary = {
        "mean": floor["fid"],
        "std": floor["fid_std"],
        "values": floor["fid_values"],
        "n": len(floor["fid_values"]),
        "kid_mean": floor.get("kid_mean"),
        "n_samples": floor.get("n_samples"),
        "fid_all_validation": floor["fid_all_validation"],
    }
    sampling["fid"]["course"] = {"model": course, "floor": floor_summary}
    print(
        f"course protocol ({course['n_samples']} samples x {course['n']} seeds, dims 192): FID "
        f"{course['mean']:.2f} +- {course['std']:.2f}; "
        f"real-data floor {floor['fid']:.2f} +- {floor['fid_std']:.2f}"
    )
else:
    print(f"FID {note}")

# %% [markdown]
# ## FID and KID, matched protocol, beside its real-data floor

# %%
if available:
    samples, labels = draw_class_samples(
        model, sz.matched_per_class, seed=ctx.seed + 1000, device=ctx.device, batch_size=sz.sample_batch
    )
    matched_all = fid.matched_protocol(
        samples,
        labels,
        ctx.data_root,
        sz.matched_per_class,
        2048,
        seed=ctx.seed,
        device=ctx.device,
        progress=False,
    )
    matched, matched_floor = matched_all["model"], matched_all["floor"]
    sampling["fid"]["matched"] = {
        "model": {
            "mean": matched["fid"],
            "std": None,
            "n": 1,
            "kid_mean": matched["kid_mean"],
            "kid_std": matched["kid_std"],
            "n_samples": matched["n_samples"],
            "dims": matched["dims"],
        },
        "floor": {
            "mean": matched_floor["fid"],
            "std": None,
            "n": 1,
            "kid_mean": matched_floor["kid_mean"],
            "kid_std": matched_floor["kid_std"],
            "n_samples": matched_floor["n_samples"],
        },
        "per_class": {CLASS_NAMES[k]: v for k, v in matched_all["per_class"].items()},
    }
    display(pd.DataFrame(sampling["fid"]["matched"]["per_class"]).T.rename_axis("class"))
    print(
        f"matched protocol ({matched['n_samples']} vs {matched['n_reference']}, dims 2048): "
        f"FID {matched['fid']:.2f} (floor {matched_floor['fid']:.2f}); "
        f"KID {matched['kid_mean']:.4f} (floor {matched_floor['kid_mean']:.4f})"
    )
display(
    render_figure(
        "fid_floor", {"meta": ctx.meta, "sampling": sampling}, ctx.paths.results, ctx.paths.figures
    )[0]
)

# %% [markdown]
# ## Samples per class

# %%
if grid_images is None or sz.course_per_class < sz.grid_per_class:
    grid_images, grid_labels = draw_class_samples(
        model, sz.grid_per_class, seed=ctx.seed, device=ctx.device, batch_size=sz.sample_batch
    )
save_samples("samples", grid_images, grid_labels, sz.grid_per_class)
display(render_figure("samples_per_class", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])

# %% [markdown]
# ## Samples at several temperatures
# One generator seed for every temperature: the blocks differ only by the temperature.

# %%
temperatures = [1.0, 0.9, 0.8]
per_temperature = min(4, sz.grid_per_class)
by_temperature = [
    draw_class_samples(
        model, per_temperature, seed=ctx.seed, device=ctx.device, batch_size=sz.sample_batch, temperature=t
    )[0]
    for t in temperatures
]
images = torch.stack(by_temperature, dim=1).unflatten(0, (len(CLASS_NAMES), per_temperature))
np.savez_compressed(
    ctx.paths.results / "samples_temperatures.npz",
    images=to_uint8_hwc(images.transpose(1, 2)),  # (class, temperature, sample, H, W, 3)
    temperatures=np.array(temperatures),
)
display(render_figure("samples_temperatures", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])

# %% [markdown]
# ## Completions of the top half
# Validation images (a seeded random choice per class) keep their top half; the model draws the bottom
# half under the true class, several times, and once under the next class.

# %%
val_set = CPEN455Dataset(ctx.data_root, "validation", image_size=model.config.image_size)
chosen = per_class_indices(val_set.labels, len(CLASS_NAMES), max(1, sz.nn_per_class), ctx.seed).flatten()
originals = torch.stack([val_set[int(i)][0] for i in chosen])
true_labels = torch.tensor([val_set.labels[int(i)] for i in chosen])
other_labels = (true_labels + 1) % len(CLASS_NAMES)
rows = model.config.image_size // 2
generator = torch.Generator().manual_seed(ctx.seed + 2000)
completed = complete(model, originals, true_labels, rows=rows, per_image=3, generator=generator)
other = complete(model, originals, other_labels, rows=rows, per_image=1, generator=generator)[:, 0]
np.savez_compressed(
    ctx.paths.results / "completions.npz",
    originals=to_uint8_hwc(originals),
    completions=to_uint8_hwc(completed),
    other=to_uint8_hwc(other),
    labels=true_labels.numpy(),
    other_labels=other_labels.numpy(),
    rows=rows,
)
display(render_figure("completions", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])

# %% [markdown]
# ## Samples over training
# The grids the training run saved every `train.sample_every` epochs (none when that is 0).

# %%
grid_epochs, grids = read_sample_grids(Path(checkpoint).parent.parent / "samples")
np.savez_compressed(ctx.paths.results / "training_samples.npz", grids=grids, epochs=np.array(grid_epochs))
print(f"{len(grid_epochs)} sample grids saved during training, epochs {grid_epochs}")
display(render_figure("samples_over_training", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])

# %% [markdown]
# ## The committed reference model's samples, beside these
# `checkpoints/reference.pt` (the `cpu` profile on the course data), when this clone has it.

# %%
reference_ckpt = reference_checkpoint()
sampling["reference_checkpoint"] = str(reference_ckpt) if reference_ckpt else None
if reference_ckpt is not None:
    ref_model = load_model(reference_ckpt, device=ctx.device)
    ref_images, ref_labels = draw_class_samples(
        ref_model, sz.reference_per_class, seed=ctx.seed, device=ctx.device, batch_size=sz.sample_batch
    )
    save_samples("reference_samples", ref_images, ref_labels, sz.reference_per_class)
    display(render_figure("samples_reference", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])
else:
    (ctx.paths.results / "reference_samples.npz").unlink(missing_ok=True)
    print("no checkpoints/reference.pt in this clone: only this run's samples are shown")

# %% [markdown]
# ## Checks a reviewer asks for
# A small discriminative CNN, trained on the same training split (a baseline for context, not the
# classifier of this project), then used as an independent judge: how often does it recognise the class
# a sample was generated for? And are samples copies of training images? Each sample is shown beside its
# nearest training images in pixel space.

# %%
baseline, baseline_report = train_baseline(
    ctx.data_root,
    epochs=sz.baseline_epochs,
    max_minutes=sz.baseline_minutes,
    seed=ctx.seed,
    device=str(ctx.device),
    progress=False,
    max_train_images=sz.baseline_train_images,
)
judged_images, judged_labels = (samples, labels) if available else (grid_images, grid_labels)
consistency = class_consistency(lambda x: baseline_predict(baseline, x), judged_images, judged_labels)
train_set = CPEN455Dataset(ctx.data_root, "train", image_size=model.config.image_size)
train_images = torch.stack([train_set[i][0] for i in range(len(train_set))])
shown = torch.cat(
    [torch.nonzero(grid_labels == k).flatten()[: sz.nn_per_class] for k in grid_labels.unique()]
)
nn_indices, nn_distances = nearest_neighbours(grid_images[shown], train_images, k=4)
np.savez_compressed(
    ctx.paths.results / "nearest_neighbours.npz",
    grid=nearest_neighbour_grid(grid_images[shown], train_images, nn_indices),
    labels=grid_labels[shown].numpy(),
)
sampling["checks"] = {
    "baseline": {k: v for k, v in baseline_report.items() if k != "train_loss"},
    "class_consistency": consistency,
    "nearest_neighbour_distance": {
        "mean": float(nn_distances[:, 0].mean()),
        "min": float(nn_distances[:, 0].min()),
        "n_samples": int(len(shown)),
        "n_train": int(len(train_set)),
    },
}
print(
    f"baseline CNN: validation accuracy {baseline_report['accuracy']:.1%} after "
    f"{baseline_report['epochs']:.1f} epochs ({baseline_report['train_seconds'] / 60:.1f} min); "
    "it recognises "
    f"{consistency['overall']:.1%} of {consistency['n']} samples as their class"
)
sampling["checks"]["judge_per_class"] = judge_per_class(consistency, baseline_report)
display(pd.DataFrame(sampling["checks"]["judge_per_class"]).T)
display(render_figure("nearest_neighbours", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])
display(
    render_figure(
        "judge_per_class", {"meta": ctx.meta, "sampling": sampling}, ctx.paths.results, ctx.paths.figures
    )[0]
)

# %% [markdown]
# ## Real training images beside samples
# Per class a seeded random choice of training images above the samples of the grid.

# %%
real = per_class_indices(train_set.labels, len(CLASS_NAMES), sz.grid_per_class, ctx.seed)
np.savez_compressed(
    ctx.paths.results / "real_vs_generated.npz",
    real=to_uint8_hwc(train_images[torch.from_numpy(real)]),
    generated=samples_by_class(grid_images, grid_labels.tolist(), len(CLASS_NAMES), sz.grid_per_class),
)
display(render_figure("real_vs_generated", {"meta": ctx.meta}, ctx.paths.results, ctx.paths.figures)[0])

# %% [markdown]
# ## Sampler speed
# The naive sampler runs the network once per pixel; the cached sampler computes only the new position of
# each layer. With the same generator state both return the same images.

# %%
sampling["speed"] = sampler_speed(
    model, sz.speed_batches, device=ctx.device, naive=sz.naive_speed, seed=ctx.seed
)
display(pd.DataFrame(sampling["speed"]))
display(
    render_figure(
        "sampler_speed", {"meta": ctx.meta, "sampling": sampling}, ctx.paths.results, ctx.paths.figures
    )[0]
)

# %%
sampling["sizes"] = {
    "course_per_class": sz.course_per_class,
    "fid_seeds": ctx.seeds(sz.fid_seeds),
    "matched_per_class": sz.matched_per_class,
    "grid_per_class": sz.grid_per_class,
    "temperatures": temperatures,
    "temperature_per_class": per_temperature,
    "completion_rows": rows,
    "completion_images": len(chosen),
    "training_grid_epochs": grid_epochs,
}
write_result(ctx.paths, "sampling", sampling)
