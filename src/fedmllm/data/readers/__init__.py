"""The readers of the real datasets' published formats, importable in one place; each lives in
its dataset's file of :mod:`fedmllm.data.datasets` (whose docstring gives the layout), and
what they share in :mod:`fedmllm.data.reading`.

Every reader returns a :class:`ReadResult` (``samples, skipped = read_...(...)``) and raises a
one-line :class:`~fedmllm.data.errors.DataError` on bad input unless ``skip_bad=True``.
:data:`TEST_SPLITS` (the split a plain "test" means) is read from the registry.
"""

from ..datasets.crisismmd import crisismmd_path, read_crisismmd, remove_url
from ..datasets.hateful_memes import hateful_memes_path, read_hateful_memes
from ..datasets.medalpaca import read_medalpaca
from ..datasets.slake import read_slake
from ..datasets.vqa_rad import read_vqa_rad
from ..reading import ReadResult, check_images, load_json, resolve_image
from ..registry import dataset_names, get_dataset

TEST_SPLITS = {n: get_dataset(n).test_split for n in dataset_names("eval")}

__all__ = [
    "TEST_SPLITS",
    "ReadResult",
    "check_images",
    "crisismmd_path",
    "hateful_memes_path",
    "load_json",
    "read_crisismmd",
    "read_hateful_memes",
    "read_medalpaca",
    "read_slake",
    "read_vqa_rad",
    "remove_url",
    "resolve_image",
]
