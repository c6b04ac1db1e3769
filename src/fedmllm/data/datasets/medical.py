"""The ``medical`` composite of FedMLLM's medical setting (arXiv 2411.14717): VQA-RAD's
training questions (images) and the MedAlpaca flashcards (text only) are the two halves the
clients hold; VQA-RAD's test questions are the test set and SLAKE's English test questions,
when present, an extra test set.

Folders: ``DATA_DIR/vqa_rad``, ``DATA_DIR/medalpaca`` and ``DATA_DIR/slake``, each overridable
by its option (``vqa_rad_dir``, ``medalpaca_dir``, ``slake_dir``); without ``data_dir`` the
first two must be given.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..registry import DatasetOption, DatasetSpec, Loaded, Source
from .medalpaca import read_medalpaca
from .slake import read_slake
from .vqa_rad import read_vqa_rad

__all__ = ["SPEC"]


def _folders(source: Source) -> tuple[Path, Path, Path | None]:
    o = source.options
    root = Path(source.data_dir) if source.data_dir else None
    if root is None and not (o["vqa_rad_dir"] and o["medalpaca_dir"]):
        raise DataError("data.data_dir: required for dataset 'medical'")
    vdir = Path(o["vqa_rad_dir"]) if o["vqa_rad_dir"] else root / "vqa_rad"
    mdir = Path(o["medalpaca_dir"]) if o["medalpaca_dir"] else root / "medalpaca"
    sdir = Path(o["slake_dir"]) if o["slake_dir"] else (root / "slake" if root else None)
    return vdir, mdir, sdir


def _build(source: Source) -> Loaded:
    vdir, mdir, sdir = _folders(source)
    source.params.update(vqa_rad_dir=str(vdir.absolute()), medalpaca_dir=str(mdir.absolute()))
    skip = True  # the readers record every bad item; source.take raises or skips them
    train, tests = source.wants("train"), source.wants("test")
    image_train = source.take(read_vqa_rad(vdir, "train", skip_bad=skip)) if train else []
    test = source.take(read_vqa_rad(vdir, "test", skip_bad=skip)) if tests else []
    text_train = source.take(read_medalpaca(mdir, skip_bad=skip)) if train else []
    image_train = source.checked(image_train, "vqa_rad")
    test = source.checked(test, "vqa_rad")
    extra = {}
    if tests and sdir is not None and (sdir / "Slake1.0" / "test.json").is_file():
        source.params["slake_dir"] = str(sdir.absolute())
        slake = source.take(read_slake(sdir, "test", skip_bad=skip))
        extra["slake"] = source.checked(slake, "slake")
    return Loaded("medical", "qa", image_train + text_train, test, extra)


SPEC = DatasetSpec(
    name="medical", kind="qa", doc="VQA-RAD + MedAlpaca (+ SLAKE) as in FedMLLM's medical setting",
    build=_build,
    options=(
        DatasetOption("vqa_rad_dir", "medical: VQA-RAD folder (default DATA_DIR/vqa_rad)"),
        DatasetOption("medalpaca_dir", "medical: MedAlpaca file or folder"),
        DatasetOption("slake_dir", "medical: SLAKE folder (default DATA_DIR/slake)"),
    ),
)
