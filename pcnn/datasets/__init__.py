"""CPEN455 data: the course layout, image decoding, transforms, the data set, a synthetic stand-in, the
downloader and the training order.

One module per topic: `layout` (classes, splits, CSV parsing), `images` (decoding), `transforms`,
`dataset`, `synthetic`, `install` (putting a folder in place), `location` (which root), `checks`,
`download` and `train_data` (the training order). No model, training or evaluation code. This package
exposes what callers use; the old path `pcnn.data` is this package.
"""

from pcnn.datasets.checks import check_data_root, class_counts, summarize
from pcnn.datasets.dataset import CPEN455Dataset, evenly_spaced_indices
from pcnn.datasets.download import COURSE_ARCHIVE_URL, KNOWN_CSV_SHA256, fetch
from pcnn.datasets.images import load_image_uint8
from pcnn.datasets.layout import (
    CLASS_NAMES,
    LABELLED_SPLITS,
    NUM_CLASSES,
    SPLITS,
    TEST_LABEL,
    DataError,
    read_split_csv,
)
from pcnn.datasets.location import DATA_DIR_ENV, default_data_dir, resolve_data_dir
from pcnn.datasets.synthetic import SYNTHETIC_MARKER, SYNTHETIC_VERSION, make_synthetic, synthetic_data_dir
from pcnn.datasets.transforms import ToGrid, eval_transform, train_transform

__all__ = [
    "CLASS_NAMES",
    "COURSE_ARCHIVE_URL",
    "CPEN455Dataset",
    "DATA_DIR_ENV",
    "DataError",
    "KNOWN_CSV_SHA256",
    "LABELLED_SPLITS",
    "NUM_CLASSES",
    "SPLITS",
    "SYNTHETIC_MARKER",
    "SYNTHETIC_VERSION",
    "TEST_LABEL",
    "ToGrid",
    "check_data_root",
    "class_counts",
    "default_data_dir",
    "eval_transform",
    "evenly_spaced_indices",
    "fetch",
    "load_image_uint8",
    "make_synthetic",
    "read_split_csv",
    "resolve_data_dir",
    "summarize",
    "synthetic_data_dir",
    "train_transform",
]
