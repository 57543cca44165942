"""The data set of one split, checked when built so that a broken root fails before training starts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from pcnn.datasets.images import load_image_uint8
from pcnn.datasets.layout import DataError, Row, read_rows
from pcnn.datasets.transforms import eval_transform

_MAX_LISTED = 5


def missing_images(root: Path, split: str, rows: list[Row]) -> DataError | None:
    missing = [row for row in rows if not (root / row.path).is_file()]
    if not missing:
        return None
    listed = "; ".join(f"line {row.line}: {row.path}" for row in missing[:_MAX_LISTED])
    more = f"; and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
    return DataError(f"{root / f'{split}.csv'}: {len(missing)} listed image file(s) missing: {listed}{more}")


class CPEN455Dataset(Dataset):
    """One split of a course-layout root, yielding ``(float32 (3, S, S) image on the grid, label)``.

    The CSV and the existence of every image are checked at construction so that a broken root fails
    before training starts. ``cache=True`` decodes every image once and keeps it, resized to
    ``image_size`` (antialiased, uint8), in memory: augmentation then runs on the cached copy, which
    gives the same result as decoding each time because resizing to the size an image already has is
    the identity.
    """

    def __init__(
        self,
        root: Path | str,
        split: str,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_size: int = 32,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.image_size = image_size
        self.transform = transform if transform is not None else eval_transform(image_size)
        rows = read_rows(self.root, split)
        error = missing_images(self.root, split, rows)
        if error is not None:
            raise error
        self.paths: list[str] = [row.path for row in rows]
        self.labels: list[int] = [row.label for row in rows]
        self.ids: list[str] = [PurePosixPath(path).stem for path in self.paths]
        self._cache: torch.Tensor | None = None
        if cache:
            self._cache = self._decode_all()

    def _decode_all(self) -> torch.Tensor:
        images = torch.empty((len(self.paths), 3, self.image_size, self.image_size), dtype=torch.uint8)
        for index, path in enumerate(tqdm(self.paths, desc=f"decoding {self.split}", disable=None)):
            image = load_image_uint8(self.root / path)
            images[index] = TF.resize(image, [self.image_size, self.image_size], antialias=True)
        return images

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cache is not None:
            image = self._cache[index]
        else:
            image = load_image_uint8(self.root / self.paths[index])
        return self.transform(image), self.labels[index]


def evenly_spaced_indices(n: int, subset: int) -> list[int]:
    """Indices of a fixed, evenly spaced subset of `subset` items out of `n` (first and last included);
    all of them when `subset` is 0 or at least `n`. Evaluation's `subset` options all pick images this way.
    """
    if subset and subset < n:
        return np.linspace(0, n - 1, subset).round().astype(int).tolist()
    return list(range(n))
