"""The course's grading scripts run against our model, and `pcnn evaluate --split test` writes its submission.

The harnesses below are this project's own small stand-ins for the course's `classification_evaluation.py`
and `generation_evaluation.py`: the same calling convention (how the model is built, moved, loaded and
called, what the loader yields), on a tiny 8x8 model and a tiny synthetic data root.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from pcnn.commands.cli import main
from pcnn.core.classify import predict
from pcnn.datasets import CPEN455Dataset, make_synthetic, read_split_csv
from pcnn.evaluation import course
from pcnn.evaluation.fid import IMAGE_EXTENSIONS
from pcnn.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    model_state,
    save_checkpoint,
)
from tests.conftest import randomize_, tiny_model

SIZE = 8  # the tiny model's image size; the course's is 32


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    counts = {"train": 1, "validation": 3, "test": 2}
    return make_synthetic(tmp_path_factory.mktemp("synthetic") / "root", seed=2, counts=counts)


def _save(model: torch.nn.Module, path: Path) -> Path:
    """A checkpoint as `pcnn export` writes it (config and one set of weights)."""
    return save_checkpoint(
        path, {"model_config": dataclasses.asdict(model.config), "model": model_state(model)}
    )


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return _save(tiny_model("gated-bias", image_size=SIZE), tmp_path / "models" / "conditional_pixelcnn.pth")


def _decode(path: Path) -> torch.Tensor:
    """uint8 (C, H, W) with the file's own channels, as torchvision's read_image decodes it."""
    with Image.open(path) as image:
        array = np.array(image)
    return (
        torch.from_numpy(array).unsqueeze(0) if array.ndim == 2 else torch.from_numpy(array).permute(2, 0, 1)
    )


class _CourseLoaderDataset(Dataset):
    """What the course's loader yields: float images in [-1, 1] resized as floats, and class names."""

    def __init__(self, root: Path, split: str) -> None:
        self.rows = read_split_csv(root, split)
        self.root = root
        self.transform = transforms.Compose([transforms.Resize((SIZE, SIZE)), lambda x: (x - 0.5) * 2.0])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path, label = self.rows[index]
        image = _decode(self.root / path).float() / 255.0
        if image.shape[0] == 1:  # the course replicates grayscale images to three channels
            image = image.repeat(3, 1, 1)
        return self.transform(image), f"Class{label}" if label >= 0 else "Unknown"


def _classification_harness(checkpoint: Path, root: Path) -> tuple[float, list[torch.Tensor]]:
    """The classification script's sequence, with its two student lines filled in as the README says."""
    device = torch.device("cpu")
    loader = DataLoader(_CourseLoaderDataset(root, "validation"), batch_size=5, shuffle=True)
    model = course.CourseModel(checkpoint)  # the student's model line
    model = model.to(device)
    model.load_state_dict(torch.load(checkpoint))  # the script's fixed line
    model.eval()
    correct = seen = 0
    answers = []
    for model_input, categories in loader:
        model_input = model_input.to(device)
        original = torch.tensor([int(name.removeprefix("Class")) for name in categories], dtype=torch.int64)
        answer = course.get_label(model, model_input, device)  # the student's get_label body
        assert answer.dtype == torch.int64 and answer.shape == (len(categories),)
        assert answer.device == original.device
        correct += torch.sum(answer == original).item()
        seen += model_input.shape[0]
        answers.append(answer)
    return correct / seen, answers


def test_classification_harness_runs_and_agrees_with_our_classifier(
    checkpoint: Path, data_root: Path
) -> None:
    accuracy, answers = _classification_harness(checkpoint, data_root)
    assert 0.0 <= accuracy <= 1.0 and sum(len(a) for a in answers) == 12
    # the same images through our own pipeline (uint8 resize, then the grid) get the same predictions
    net = load_model(checkpoint)
    dataset = _CourseLoaderDataset(data_root, "validation")
    ours = CPEN455Dataset(data_root, "validation", image_size=SIZE)
    course_x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    own_x = torch.stack([ours[i][0] for i in range(len(ours))])
    snapped = course.to_grid(course_x, SIZE)
    assert ((snapped - own_x).abs() * 127.5).max() <= 2.0 + 1e-4  # within the two resizes' rounding
    model = course.CourseModel(checkpoint)
    assert torch.equal(model(course_x), predict(net, snapped))
    assert (model(course_x) == predict(net, own_x)).float().mean() >= 0.75


def test_harness_load_state_dict_takes_the_checkpoint_weights(checkpoint: Path, tmp_path: Path) -> None:
    other = randomize_(tiny_model("gated-bias", image_size=SIZE), scale=0.5, seed=3)
    other_path = _save(other, tmp_path / "other.pth")
    model = course.CourseModel(checkpoint)
    model.load_state_dict(torch.load(other_path))
    assert torch.equal(model.net.out.bias, other.out.bias)
    bigger = _save(tiny_model("gated-bias", image_size=SIZE, nr_filters=12), tmp_path / "bigger.pth")
    with pytest.raises(CheckpointError, match="not the one this CourseModel was built from"):
        model.load_state_dict(torch.load(bigger))


class _CoursePixelCNN(torch.nn.Module):
    """Stands in for the course's own PixelCNN: a different architecture, saved as a bare state_dict."""

    def __init__(self) -> None:
        super().__init__()
        self.u_init = torch.nn.Conv2d(3, 4, 2)
        self.nin_out = torch.nn.Linear(4, 50)


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    foreign = _CoursePixelCNN().state_dict()
    path = tmp_path / "models" / "conditional_pixelcnn.pth"
    path.parent.mkdir()
    torch.save(foreign, path)
    with pytest.raises(CheckpointError, match=r"bare state_dict of 4 tensors \(keys 'u_init.weight'"):
        course.CourseModel(path)
    model = course.CourseModel(_save(tiny_model("gated-bias", image_size=SIZE), tmp_path / "ours.pth"))
    with pytest.raises(CheckpointError, match="bare state_dict.*not a pcnn-checkpoint-v1 checkpoint"):
        model.load_state_dict(torch.load(path))
    with pytest.raises(TypeError, match="CourseModel"):
        course.get_label(_CoursePixelCNN(), torch.zeros(1, 3, SIZE, SIZE), "cpu")


def test_inputs_off_the_course_convention_are_refused(checkpoint: Path) -> None:
    model = course.CourseModel(checkpoint)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model(torch.full((1, 3, SIZE, SIZE), 200.0))  # forgot the rescaling
    with pytest.raises(ValueError, match=rf"{SIZE}x{SIZE} images, got 32x32"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="float images"):
        model(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8))


def test_generation_harness_writes_exactly_the_samples(checkpoint: Path, tmp_path: Path) -> None:
    """The generation script's sequence: make samples/, sample into it, then pytorch-fid reads it whole."""
    gen_data_dir = str(tmp_path / "samples")
    os.makedirs(gen_data_dir, exist_ok=True)
    model = course.CourseModel(checkpoint)  # the student's model lines
    model = model.to("cpu")
    model = model.eval()
    course.write_samples(model, gen_data_dir, per_class=2)  # the student's my_sample body
    names = sorted(os.listdir(gen_data_dir))
    assert names == [f"Class{k}_image_{i:02d}.jpg" for k in range(4) for i in (1, 2)]
    read_by_fid = sorted(p.name for ext in IMAGE_EXTENSIONS for p in Path(gen_data_dir).glob(f"*.{ext}"))
    assert read_by_fid == names
    assert {tuple(_decode(Path(gen_data_dir, n)).shape) for n in names} == {(3, SIZE, SIZE)}
    course.write_samples(model, gen_data_dir, per_class=1)  # a smaller rerun leaves no stale sample
    assert sorted(os.listdir(gen_data_dir)) == [f"Class{k}_image_01.jpg" for k in range(4)]
    (tmp_path / "samples" / "grid.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"not samples \(grid.png\)"):
        course.write_samples(model, gen_data_dir, per_class=1)


# ------------------------------------------------------------------------------------ the submission


def test_evaluate_test_split_writes_the_course_submission(
    checkpoint: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data-dir", str(data_root), "--device", "cpu"]
    out = tmp_path / "out"
    assert main([*argv, "--split", "test", "--out", str(out), "--fid", "17.25"]) == 0
    raw = (out / "submission.csv").read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    test_rows = read_split_csv(data_root, "test")
    assert len(test_rows) == 8 and lines[0] == "id,label" and lines[-1] == "fid,17.25"
    ids = [line.split(",")[0] for line in lines[1:-1]]
    assert ids == [PurePosixPath(path).name for path, _ in test_rows]  # every image once, in the CSV's order
    assert len(set(ids)) == len(ids) and all(i.endswith(".jpg") and "/" not in i for i in ids)
    labels = [line.split(",")[1] for line in lines[1:-1]]
    assert set(labels) <= {"0", "1", "2", "3"}
    net = load_model(checkpoint)
    test = CPEN455Dataset(data_root, "test", image_size=SIZE)
    expected = predict(net, torch.stack([test[i][0] for i in range(len(test))]))
    assert labels == [str(int(v)) for v in expected]

    assert main([*argv, "--split", "test", "--out", str(tmp_path / "plain")]) == 0
    assert (tmp_path / "plain" / "submission.csv").read_text().splitlines() == lines[:-1]  # no FID row
    capsys.readouterr()
    assert main([*argv, "--split", "validation", "--out", str(tmp_path / "v"), "--fid", "3"]) == 2
    assert main([*argv, "--split", "test", "--out", str(tmp_path / "s"), "--subset", "4"]) == 2
    assert main([*argv, "--split", "test", "--out", str(tmp_path / "n"), "--fid", "nan"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors)
    assert not (tmp_path / "v").exists() and not (tmp_path / "s").exists()
    exported = json.loads((tmp_path / "plain" / "test_metrics.json").read_text())
    assert exported["checkpoint"] == {"epoch": None, "step": None}, "an exported checkpoint has no position"
    trained = tmp_path / "trained.pt"
    save_checkpoint(trained, {**load_checkpoint(checkpoint), "epoch": 3, "step": 12})
    val = ["evaluate", "--checkpoint", str(trained), "--data-dir", str(data_root), "--device", "cpu"]
    assert main([*val, "--split", "validation", "--out", str(tmp_path / "val"), "--subset", "4"]) == 0
    measured = json.loads((tmp_path / "val" / "validation_metrics.json").read_text())
    assert measured["checkpoint"] == {"epoch": 3, "step": 12} and measured["n"] == 4
