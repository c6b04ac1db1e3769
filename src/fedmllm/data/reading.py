"""What every dataset reader (:mod:`fedmllm.data.datasets`) shares: the result type, the
bad-item collector, JSON and image helpers, and the image check.

Images become absolute path strings, resolved inside the dataset root: a path that escapes it
(``..``, absolute) is an error (:func:`resolve_image`). :func:`check_images` decodes each
image in full (:func:`image_problem`) and reports every bad one at once.

Every problem with the input raises :class:`~fedmllm.data.errors.DataError` with one line
naming the file and the line, row or sample id. With ``skip_bad=True`` per-item problems (bad
row, unknown label, wrong type, malformed line, bad image path) are skipped instead and
reported in :attr:`ReadResult.skipped` (through :class:`RowCollector`); file-level problems
(missing file or column, empty split) always raise. A build reads with ``skip_bad=True`` and
raises one error listing every bad item and image itself
(:meth:`fedmllm.data.registry.Source.finish`), or skips them. Text is UTF-8: a file or line
that is not is an error naming the line (:func:`load_json`, :func:`not_utf8`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError
from .types import Sample

__all__ = [
    "IMAGE_MODES",
    "ReadResult",
    "RowCollector",
    "RowError",
    "bad_samples_message",
    "check_images",
    "image_problem",
    "json_objects",
    "load_json",
    "not_utf8",
    "read_rows",
    "read_vqa_questions",
    "require_file",
    "require_rows",
    "resolve_image",
    "typed_field",
]


@dataclass
class ReadResult:
    """Samples read from one split, and the items skipped (``{"file", "where", "reason"}``)."""

    samples: list[Sample]
    skipped: list[dict] = field(default_factory=list)

    def __iter__(self):  # so ``samples, skipped = read_...(...)`` works
        return iter((self.samples, self.skipped))


class RowError(Exception):
    """A problem with one item (caught and turned into a DataError or a skip)."""


class RowCollector:
    """Turns a bad item into a :class:`DataError` naming ``path`` and the item, or, with
    ``skip_bad``, records it in :attr:`skipped` (``kind`` is ``"line"`` or ``"item"``)."""

    def __init__(self, path: Path, skip_bad: bool, kind: str):
        self.path, self.skip_bad, self.kind = path, skip_bad, kind
        self.skipped: list[dict] = []

    def bad(self, where: Any, reason: str) -> None:
        if not self.skip_bad:
            raise DataError(f"{self.path}, {self.kind} {where}: {reason}")
        self.skipped.append({"file": str(self.path), "where": f"{self.kind} {where}",
                             "reason": reason})


def resolve_image(root: Path, rel: str) -> str:
    """``root/rel`` as an absolute, normalised path string; ``rel`` must stay inside ``root``.

    The check is lexical (``..`` and absolute paths are refused); symbolic links inside the
    root are followed when the image is opened, so an ``img/`` link to another disk works.
    """
    if not isinstance(rel, str) or not rel.strip():
        raise RowError(f"image path must be a non-empty string, got {rel!r}")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
        raise RowError(f"image path {rel!r} is absolute (must be relative to {root})")
    root_abs = os.path.abspath(root)
    full = os.path.normpath(os.path.join(root_abs, rel))
    if not full.startswith(root_abs.rstrip(os.sep) + os.sep):
        raise RowError(f"image path {rel!r} escapes the dataset root {root}")
    return full


def require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")


def load_json(path: Path) -> Any:
    """The JSON document in ``path`` (UTF-8); a missing file, bytes that are not UTF-8 or
    malformed JSON raise a :class:`DataError` naming the file and the line."""
    require_file(path, "file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: malformed JSON ({e.msg})") from None


def typed_field(obj: dict, key: str, types: tuple) -> Any:
    """``obj[key]``, which must be one of ``types`` (never a ``bool``), else a :class:`RowError`."""
    if key not in obj:
        raise RowError(f"missing field '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, types):
        names = "/".join(t.__name__ for t in types)
        raise RowError(f"field '{key}' must be {names}, got {type(v).__name__} {v!r}")
    return v


def require_rows(samples: list, path: Path, what: str, skipped: list[dict] = ()) -> None:
    """An empty split is a file-level error; when bad items (``skipped``, those not
    ``passed_over``) emptied it, they are listed."""
    bad = [item for item in skipped if not item.get("passed_over")]
    if not samples:
        why = f": {bad_samples_message(bad)}" if bad else ""
        raise DataError(f"{path}: empty split (no usable {what}){why}")


def not_utf8(line: str) -> bool:
    """Whether ``line``, read with ``errors="surrogateescape"``, held bytes that are not UTF-8."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_rows(col: RowCollector, items: Iterable[tuple[Any, Any]],
              row: Callable[[Any], Sample | None], what: str) -> ReadResult:
    """The samples ``row`` makes of ``items``, ``(where, item)`` pairs in file order: an item
    for which ``row`` raises :class:`RowError` is a bad item (``col`` raises or records it,
    naming ``where``), one it maps to ``None`` is passed over. No sample at all is a file-level
    error (:func:`require_rows`, ``what`` naming the items)."""
    out: list[Sample] = []
    for where, item in items:
        try:
            sample = row(item)
        except RowError as e:
            col.bad(where, str(e))
            continue
        if sample is not None:
            out.append(sample)
    require_rows(out, col.path, what, col.skipped)
    return ReadResult(out, col.skipped)


def json_objects(path: Path, what: str, col: RowCollector, id_key: str | None = "qid"
                 ) -> Iterator[tuple[Any, dict]]:
    """``(where, object)`` for each item of the JSON list in ``path`` (a list of ``what``);
    ``where`` is the item's index, with the item's ``id_key`` when it has one (without
    ``id_key``, the index itself). Items that are not objects are bad items."""
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {what}")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            col.bad(i, "expected a JSON object")
            continue
        yield (f"{i} ({id_key} {obj[id_key]})" if id_key and id_key in obj else i), obj


def _answer_string(obj: dict) -> str:
    v = typed_field(obj, "answer", (str, int, float))
    return str(v).strip()


def read_vqa_questions(path: Path, images: Path, image_key: str, skip_bad: bool,
                       extra: Callable[[dict], dict | None], *, task: str, id_prefix: str,
                       split: str) -> ReadResult:
    """The questions of a VQA-RAD or SLAKE JSON list ``path`` that ``extra`` keeps, as samples
    ``{id_prefix}-{qid}`` of ``task``.

    The fields both datasets share: ``qid``, ``question``, ``answer``, ``answer_type``
    (OPEN/CLOSED) and the image ``obj[image_key]`` under ``images``. ``extra(obj)`` gives a
    question's own meta (after ``source`` = ``task``, ``split`` and ``qid``), or ``None`` to
    pass it over (another split or language); it may raise :class:`RowError`."""
    col = RowCollector(path, skip_bad, "item")

    def row(obj: dict) -> Sample | None:
        meta = extra(obj)
        if meta is None:
            return None
        qid = typed_field(obj, "qid", (int, str))
        question = typed_field(obj, "question", (str,))
        answer = _answer_string(obj)
        atype = typed_field(obj, "answer_type", (str,)).strip().upper()
        if atype not in ("OPEN", "CLOSED"):
            raise RowError(f"unknown answer_type {atype!r} (expected OPEN or CLOSED)")
        image = resolve_image(images, typed_field(obj, image_key, (str,)))
        return Sample(id=f"{id_prefix}-{qid}", task=task, answer=answer, question=question,
                      image=image, answer_type=atype,
                      meta={"source": task, "split": split, "qid": qid, **meta})

    return read_rows(col, json_objects(path, "questions", col), row, f"{split} questions")


IMAGE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK",
               "YCbCr", "LAB", "HSV")
"""The Pillow modes a sample image may have: 8 bits per channel, which ``convert("RGB")`` (what
the collator does) keeps; 16-bit and float modes (``I;16``, ``I``, ``F``) would be clipped."""

MAX_LISTED = 10
"""How many bad samples one :class:`DataError` lists before ``and N more``."""


def image_problem(path: Path) -> str | None:
    """Why the file at ``path`` is not a usable sample image, or ``None`` when it is.

    It must be a file (not a folder), not empty, identified by Pillow, within Pillow's own
    ``Image.MAX_IMAGE_PIXELS`` limit (beyond twice it Pillow raises ``DecompressionBombError``),
    in one of :data:`IMAGE_MODES`, and decode in full (``Image.load``): a truncated body fails
    here, not in the middle of training.
    """
    from PIL import Image, UnidentifiedImageError

    if path.is_dir():
        return "a folder where an image file should be"
    if not path.is_file():
        return "image not found"
    if path.stat().st_size == 0:
        return "image file is empty"
    try:
        with Image.open(path) as im:
            if im.mode not in IMAGE_MODES:
                return (f"unsupported image mode {im.mode!r} (16-bit or float pixels; "
                        "save it as 8-bit RGB or L)")
            im.load()
            if im.width <= 0 or im.height <= 0:
                return "image has no pixels"
    except Image.DecompressionBombError as e:
        return f"decompression bomb refused by Pillow ({str(e).rstrip('.')})"
    except UnidentifiedImageError:
        return "image cannot be decoded (not an image file Pillow can identify)"
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return f"image cannot be decoded ({type(e).__name__}: {str(e).rstrip('.')})"
    return None


def bad_samples_message(bad: list[dict], hint: str | None = None) -> str:
    """One line for the bad samples ``bad`` (``{"file", "where", "reason"}``): the file, the
    sample or row and the reason of each (the first :data:`MAX_LISTED`, then how many more),
    and the option ``hint`` that skips them (if given)."""
    if len(bad) == 1:
        b = bad[0]
        return f"{b['file']}, {b['where']}: {b['reason']}" + (
            f" (skip it with {hint})" if hint else "")
    listed = "; ".join(f"{b['file']}, {b['where']}: {b['reason']}" for b in bad[:MAX_LISTED])
    more = f"; and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    skip = f" (skip them with {hint})" if hint else ""
    return f"{len(bad)} bad samples{skip}: {listed}{more}"


def check_images(samples: list[Sample], skip_bad: bool = False, source: str = "", *,
                 hint: str = "skip_bad=True", decoded: dict[str, str | None] | None = None
                 ) -> tuple[list[Sample], list[dict]]:
    """Check every path image in full (:func:`image_problem`); in-memory images pass.

    Returns ``(kept, bad)``, ``bad`` as ``{"file", "where", "reason", "source"}``. Without
    ``skip_bad`` any bad image raises one :class:`DataError` listing all of them
    (:func:`bad_samples_message`, naming ``hint``). ``decoded`` (path -> problem) carries the
    verdicts over calls, so an image several samples share is decoded once per build.
    """
    decoded = {} if decoded is None else decoded
    kept, bad = [], []
    for s in samples:
        if s.image is None or not isinstance(s.image, (str, Path)):
            kept.append(s)
            continue
        p = str(s.image)
        if p not in decoded:
            decoded[p] = image_problem(Path(p))
        if decoded[p] is None:
            kept.append(s)
        else:
            bad.append({"file": p, "where": f"sample {s.id}", "reason": decoded[p],
                        "source": source})
    if bad and not skip_bad:
        raise DataError(bad_samples_message(bad, hint))
    return kept, bad
