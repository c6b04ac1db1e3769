"""Readers of the real datasets' published formats into :class:`~fedmllm.data.types.Sample`,
one module per dataset (each module's docstring gives the dataset's layout):

- :mod:`.hateful_memes`: Hateful Memes (image + caption, 2 classes);
- :mod:`.crisismmd`: CrisisMMD v2.0 humanitarian task (image + tweet, 8 classes);
- :mod:`.vqa_rad`: VQA-RAD (radiology VQA);
- :mod:`.slake`: SLAKE 1.0 (medical VQA, English by default);
- :mod:`.medalpaca`: MedAlpaca medical flashcards (text-only QA);
- :mod:`.common`: what they share (:class:`ReadResult`, the bad-item rules, JSON and image
  helpers, :func:`check_images`, :data:`TEST_SPLITS`).

Every reader returns a :class:`ReadResult` (``samples, skipped = read_...(...)``) and raises a
one-line :class:`~fedmllm.data.errors.DataError` on bad input unless ``skip_bad=True``.
"""

from .common import TEST_SPLITS, ReadResult, check_images, load_json, resolve_image
from .crisismmd import crisismmd_path, read_crisismmd, remove_url
from .hateful_memes import hateful_memes_path, read_hateful_memes
from .medalpaca import read_medalpaca
from .slake import read_slake
from .vqa_rad import read_vqa_rad

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
