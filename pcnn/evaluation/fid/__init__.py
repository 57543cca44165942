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

One module per topic: `weights` (getting the Inception weights), `features`, `distances`, `reference`
(the real images), `course` and `matched` (the protocols), `samples` (sample files); this package
exposes what callers use. It draws no samples (`pcnn.sampling`) and trains nothing.
"""

from pcnn.evaluation.fid.course import course_fid, course_floor, course_metrics
from pcnn.evaluation.fid.distances import (
    frechet_distance,
    kernel_inception_distance,
    per_class_fid,
    statistics,
    summarize_over_seeds,
)
from pcnn.evaluation.fid.features import (
    IMAGE_EXTENSIONS,
    image_features,
    inception_model,
    list_image_files,
    load_image_folder,
)
from pcnn.evaluation.fid.matched import matched_fid, matched_floor, matched_protocol, matched_real_reference
from pcnn.evaluation.fid.reference import select_real_reference
from pcnn.evaluation.fid.samples import (
    COURSE_SAMPLE_NAME,
    check_output_folder,
    is_course_sample_name,
    is_inside,
    list_entries,
    non_sample_entries,
    remove_samples,
    save_course_samples,
)
from pcnn.evaluation.fid.weights import (
    FID_WEIGHTS_NAME,
    FidWeightsUnavailable,
    convert_fid_helper_weights,
    ensure_inception_weights,
    fid_helper_torchscript_path,
)

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
    "matched_protocol",
    "matched_real_reference",
    "non_sample_entries",
    "per_class_fid",
    "remove_samples",
    "save_course_samples",
    "select_real_reference",
    "statistics",
    "summarize_over_seeds",
]
