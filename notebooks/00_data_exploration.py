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
# # 00 · Data exploration
#
# The CPEN455 data: four classes (burger, panda, koala, pizza) of 64x64 JPEGs that the model sees at
# 32x32. This notebook counts the classes per split, shows examples of each class at the model's
# resolution, measures pixel statistics and finds the grayscale images (which the loader replicates to
# three channels). Without a data root it runs on the course data on Colab (the setup cell fetches it)
# and elsewhere on `$PCNN_DATA_DIR`, else on the generated synthetic stand-in set.
#
# Part of the pipeline `make demo` / `pcnn pipeline` (papermill passes the parameters below).

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

from pcnn import plots
from pcnn.data import CLASS_NAMES, CPEN455Dataset, load_image_uint8, read_split_csv, summarize
from pcnn.pipeline import notebook_context, write_result

ctx = notebook_context(
    profile,
    data_dir=data_dir,
    run_dir=run_dir,
    figures_dir=figures_dir,
    seed=seed,
    device=device,
    sizes=sizes,
)
FIG = ctx.paths.figures

# %% [markdown]
# ## Class balance

# %%
summary = summarize(ctx.data_root, progress=False)
counts = {split: info["class_counts"] for split, info in summary["splits"].items() if info["class_counts"]}
for split, info in summary["splits"].items():
    print(f"{split:>10}: {info['images']:5d} images  {info['class_counts'] or '(unlabelled)'}")
print("image sizes:", summary["image_sizes"], "| modes:", summary["modes"])
fig = plots.class_balance_figure(counts, CLASS_NAMES)
plots.save_figure(fig, FIG / "data_class_balance")
display(fig)

# %% [markdown]
# ## Examples of each class, at the model's 32x32

# %%
train = CPEN455Dataset(ctx.data_root, "train", image_size=ctx.config.model.image_size)
labels = np.asarray(train.labels)
rng = np.random.default_rng(ctx.seed)
per_class = ctx.sizes.data_examples_per_class
grid = np.stack(
    [
        plots.to_uint8_hwc(
            np.stack(
                [
                    train[i][0].numpy()
                    for i in rng.choice(np.flatnonzero(labels == k), per_class, replace=False)
                ]
            )
        )
        for k in range(len(CLASS_NAMES))
    ]
)
np.savez_compressed(ctx.paths.results / "data_examples.npz", grid=grid)
fig = plots.image_grid_figure(grid, list(CLASS_NAMES), "Training images (32x32)")
plots.save_figure(fig, FIG / "data_examples")
display(fig)

# %% [markdown]
# ## Pixel statistics
# Per class and channel, over the training images at 32x32 (what the model's likelihood is about).

# %%
limit = ctx.sizes.stats_images
chosen = (
    np.sort(rng.permutation(len(train))[:limit]) if limit and limit < len(train) else np.arange(len(train))
)
histograms = {name: np.zeros((3, 256), dtype=np.int64) for name in CLASS_NAMES}
for i in chosen:
    image = plots.to_uint8_hwc(train[i][0][None].numpy())[0]
    for c in range(3):
        histograms[CLASS_NAMES[labels[i]]][c] += np.bincount(image[..., c].ravel(), minlength=256)
levels = np.arange(256)
stats = {}
for name, hist in histograms.items():
    total = hist.sum(axis=1)
    mean = (hist * levels).sum(axis=1) / np.maximum(total, 1)
    std = np.sqrt((hist * (levels[None] - mean[:, None]) ** 2).sum(axis=1) / np.maximum(total, 1))
    stats[name] = {
        "mean_rgb": mean.round(2).tolist(),
        "std_rgb": std.round(2).tolist(),
        "images": int((labels[chosen] == CLASS_NAMES.index(name)).sum()),
    }
    print(f"{name:>7}: mean RGB {mean.round(1)}  std RGB {std.round(1)}")
fig = plots.pixel_histogram_figure(
    histograms, f"Pixel values per class ({len(chosen)} training images, 32x32)"
)
plots.save_figure(fig, FIG / "data_pixel_histograms")
display(fig)

# %% [markdown]
# ## Grayscale images
# Images whose three channels are equal (single-channel files or gray RGB files). The loader replicates a
# single channel to RGB, so the model sees them as gray colour images.

# %%
gray = []
for split in ("train", "validation", "test"):
    if not (ctx.data_root / f"{split}.csv").is_file():
        continue
    for path, label in read_split_csv(ctx.data_root, split):
        image = load_image_uint8(ctx.data_root / path)
        if bool((image[0] == image[1]).all() and (image[1] == image[2]).all()):
            gray.append({"path": path, "split": split, "label": label})
print(
    f"{len(gray)} grayscale images (summary: {summary['grayscale']}, single-channel files: "
    f"{summary['single_channel']})"
)
shown = gray[:8]
if shown:
    from torchvision.transforms.v2 import functional as TF

    pictures = np.stack(
        [
            TF.resize(load_image_uint8(ctx.data_root / g["path"]), [64, 64], antialias=True)
            .permute(1, 2, 0)
            .numpy()
            for g in shown
        ]
    )[None]
    names = [CLASS_NAMES[g["label"]] if g["label"] >= 0 else "test" for g in shown]
    fig = plots.image_grid_figure(
        pictures, ["grayscale"], f"Grayscale images ({len(gray)} in all)", cell=0.8, col_labels=names
    )
else:
    fig = plots.note_figure("no grayscale images in this data set")
plots.save_figure(fig, FIG / "data_grayscale")
display(fig)

# %%
write_result(
    ctx.paths,
    "data",
    {
        "data_source": ctx.data_source,
        "root": str(ctx.data_root),
        "splits": summary["splits"],
        "image_sizes": summary["image_sizes"],
        "modes": summary["modes"],
        "grayscale": len(gray),
        "single_channel": summary["single_channel"],
        "grayscale_examples": gray[:20],
        "pixel_stats": stats,
        "stats_images": len(chosen),
    },
)
