"""Prepared folders on disk: ``fedmllm prepare`` writes one, ``data.prepared`` loads it.

A prepared folder holds::

    client_0.json ... client_{K-1}.json   one JSON array per client (the FedMLLM code's
                                          conversation format, indent 4, UTF-8)
    test.json                             the test set, image and text kept
    test_<name>.json                      extra evaluation sets (``test_slake.json``)
    images/<id>.png                       synthetic images (real datasets keep their own paths)
    manifest.json                         parameters, seed, counts per client, skipped items

Each record is ``{"id", "image": absolute path | null, "conversations": [{"role": "user",
"content": "<image>\\n..." | "..."}, {"role": "assistant", "content": answer}], "fedmllm":
{...}}``; the extra ``fedmllm`` key (ignored by the loader of the FedMLLM code, arXiv
2411.14717) keeps the sample's fields so :func:`load_prepared` rebuilds the exact
:class:`~fedmllm.data.types.Sample` records.

:func:`write_prepared` builds the folder in a temporary sibling and renames it into place at
the end (:func:`fedmllm.files.atomic_dir`), so a failed or interrupted run never leaves a
folder that looks complete. Same data gives byte-identical files. Building the data and
writing it in one call is :func:`fedmllm.data.build.prepare`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..files import atomic_dir
from .errors import DataError
from .prompts import IMAGE_TOKEN, MC_TEMPLATES, to_conversation
from .reading import load_json
from .types import FederatedData, Sample, TaskInfo

__all__ = ["load_prepared", "write_prepared"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=4, ensure_ascii=False, default=str) + "\n"


def _record(s: Sample, strategy: str, image_path: str | None) -> dict:
    rec = to_conversation(s, strategy, image_path=image_path)
    rec["fedmllm"] = {
        "task": s.task,
        "text": s.text,
        "question": s.question,
        "label": s.label,
        "answer_type": s.answer_type,
        "meta": s.meta,
    }
    return rec


def _write_split(samples: list[Sample], path: Path, strategy: str, tmp_root: Path,
                 final_root: Path) -> None:
    records = []
    for s in samples:
        image_path = None
        if s.image is not None and not isinstance(s.image, (str, Path)):
            name = _SAFE.sub("_", str(s.id)) + ".png"
            (tmp_root / "images").mkdir(exist_ok=True)
            target = tmp_root / "images" / name
            if not target.exists():
                s.image.save(target, format="PNG")
            image_path = str(final_root / "images" / name)
        records.append(_record(s, strategy, image_path))
    path.write_text(_dump(records), encoding="utf-8")


def write_prepared(data: FederatedData, out: str | Path, overwrite: bool = False) -> Path:
    """Write ``data`` as a prepared folder at ``out`` (atomically: temp folder + rename)."""
    out = Path(out)
    final = out.absolute()
    if final.exists() and not overwrite and (not final.is_dir() or any(final.iterdir())):
        raise DataError(f"{out}: already exists (pass --overwrite to replace it)")
    with atomic_dir(final) as tmp:
        strategy = data.task.prompt_strategy
        for k, c in enumerate(data.clients):
            _write_split(c, tmp / f"client_{k}.json", strategy, tmp, final)
        _write_split(data.test, tmp / "test.json", strategy, tmp, final)
        for name, samples in data.extra_tests.items():
            _write_split(samples, tmp / f"test_{name}.json", strategy, tmp, final)
        # the manifest last: a folder with a manifest is complete
        (tmp / "manifest.json").write_text(_dump(data.manifest), encoding="utf-8")
    return final


# ----------------------------------------------------------------------------- loading


def _read_array(path: Path) -> list:
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of conversation records")
    return data


def _parse_record(rec: Any, path: Path, i: int, options_by_task: dict) -> Sample:
    def bad(msg: str) -> DataError:
        rid = rec.get("id") if isinstance(rec, dict) else None
        return DataError(f"{path}, item {i}" + (f" (id {rid})" if rid is not None else "")
                         + f": {msg}")

    if not isinstance(rec, dict):
        raise bad("expected a JSON object")
    for key in ("id", "conversations"):
        if key not in rec:
            raise bad(f"missing field '{key}'")
    conv = rec["conversations"]
    if (not isinstance(conv, list) or len(conv) < 2
            or not all(isinstance(t, dict) and isinstance(t.get("content"), str) for t in conv)):
        raise bad("'conversations' must be a list of user/assistant turns with string content")
    image = rec.get("image")
    if image is not None and not isinstance(image, str):
        raise bad("'image' must be a path string or null")
    user, answer = conv[0]["content"], conv[1]["content"]
    fm = rec.get("fedmllm")
    if isinstance(fm, dict):
        task = fm.get("task")
        if not isinstance(task, str):
            raise bad("'fedmllm.task' must be a string")
        options, label = options_by_task.get(task), fm.get("label")
        if options is not None and label is not None and (
                isinstance(label, bool) or not isinstance(label, int)
                or not 0 <= label < len(options)):
            raise bad(f"'fedmllm.label' must be null or an option index 0..{len(options) - 1}, "
                      f"got {label!r}")
        meta = fm.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise bad("'fedmllm.meta' must be an object or null")
        return Sample(
            id=str(rec["id"]), task=task, answer=answer, question=fm.get("question"),
            image=image, text=fm.get("text"), label=label, options=options,
            answer_type=fm.get("answer_type"), meta=meta or {},
        )
    # A plain conversation record (e.g. written by the FedMLLM code): the user text is kept
    # verbatim as the question, so the rebuilt prompt equals the original one.
    question = user
    if question.startswith(IMAGE_TOKEN + "\n"):
        question = question[len(IMAGE_TOKEN) + 1:]
    return Sample(id=str(rec["id"]), task="conversation", answer=answer, question=question,
                  image=image, meta={"source": "conversation"})


def _read_manifest(path: Path) -> tuple[dict, TaskInfo, int, list[str]]:
    """The manifest, its task, its client count and its extra test-set names. Every key
    :func:`load_prepared` relies on is checked here; a bad one is a :class:`DataError` naming
    the file and the key."""
    manifest = load_json(path)

    def bad(key: str, msg: str) -> DataError:
        return DataError(f"{path}, key '{key}': {msg}")

    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a fedmllm manifest (expected a JSON object)")
    for key in ("task", "num_clients"):
        if key not in manifest:
            raise bad(key, "missing (not a fedmllm manifest?)")
    t = manifest["task"]
    if not isinstance(t, dict):
        raise bad("task", "must be an object")
    for key in ("name", "kind"):
        if key not in t:
            raise bad(f"task.{key}", "missing")
        if not isinstance(t[key], str) or not t[key]:
            raise bad(f"task.{key}", f"must be a non-empty string, got {t[key]!r}")
    if t["kind"] not in ("mc", "vqa"):
        raise bad("task.kind", f"unknown kind {t['kind']!r} (expected 'mc' or 'vqa')")
    opts = t.get("options")
    if opts is not None and (not isinstance(opts, list) or not opts
                             or not all(isinstance(o, str) for o in opts)):
        raise bad("task.options", "must be a non-empty list of strings or null")
    strategy = t.get("prompt_strategy", "plain")
    if strategy not in ("plain", "agnostic"):
        raise bad("task.prompt_strategy", f"unknown strategy {strategy!r} "
                                          "(expected 'plain' or 'agnostic')")
    n = manifest["num_clients"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise bad("num_clients", f"must be a positive integer, got {n!r}")
    extra = manifest.get("extra_tests", {})
    if not isinstance(extra, dict) or not all(
            isinstance(k, str) and k and not _SAFE.search(k) for k in extra):
        raise bad("extra_tests", "must be an object keyed by test-set names "
                                 "(letters, digits, '.', '_', '-')")
    return manifest, TaskInfo.from_dict(t), n, sorted(extra)


def _layout(folder: Path) -> tuple[dict, TaskInfo, int, list[str], dict]:
    """``(manifest, task, number of clients, extra test names, options by task)``."""
    if not folder.is_dir():
        raise DataError(f"{folder}: prepared folder not found")
    mpath = folder / "manifest.json"
    if mpath.is_file():
        manifest, task, n, extra_names = _read_manifest(mpath)
    else:
        files = sorted(folder.glob("client_*.json"),
                       key=lambda p: int(p.stem[7:]) if p.stem[7:].isdigit() else -1)
        files = [p for p in files if p.stem[7:].isdigit()]
        if not files:
            raise DataError(f"{folder}: not a prepared folder (no manifest.json, no client_*.json)")
        ids = [int(p.stem[7:]) for p in files]
        if ids != list(range(len(ids))):
            raise DataError(f"{folder}: client files are not numbered 0..{len(ids) - 1}")
        manifest = {"format": "conversations", "num_clients": len(ids)}
        task = TaskInfo("conversation", "vqa", None, "plain")
        n = len(ids)
        extra_names = []
    options_by_task = {t: tpl.options for t, tpl in MC_TEMPLATES.items()}
    if task.options is not None:
        options_by_task.setdefault(task.name, task.options)
    return manifest, task, n, extra_names, options_by_task


def _load_split(path: Path, options_by_task: dict) -> list[Sample]:
    return [_parse_record(r, path, i, options_by_task) for i, r in enumerate(_read_array(path))]


def load_prepared(folder: str | Path, clients: bool = True) -> FederatedData:
    """Load a prepared folder into :class:`FederatedData` (the inverse of :func:`write_prepared`).

    A folder without ``manifest.json`` but with ``client_*.json`` files (e.g. generated by the
    FedMLLM code) loads as free-form conversations (task ``conversation``). ``clients=False``:
    no client file is opened (``clients`` is empty; a federation's server).
    """
    folder = Path(folder)
    manifest, task, n, extra_names, options = _layout(folder)
    parts = [_load_split(folder / f"client_{k}.json", options) for k in range(n if clients else 0)]
    test_path = folder / "test.json"
    test = _load_split(test_path, options) if test_path.is_file() else []
    extra = {name: _load_split(folder / f"test_{name}.json", options) for name in extra_names}
    return FederatedData(parts, test, task, manifest, extra)


def load_prepared_client(folder: str | Path, client: int) -> list[Sample]:
    """Client ``client``'s training samples of a prepared folder (``client_<client>.json``);
    what one federation site reads (the folder may hold only its own client file)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: prepared folder not found")
    path = folder / f"client_{client}.json"
    if not path.is_file():
        raise DataError(f"{path}: no such client file in the prepared folder")
    if (folder / "manifest.json").is_file():
        options = _layout(folder)[4]
    else:
        options = {t: tpl.options for t, tpl in MC_TEMPLATES.items()}
    return _load_split(path, options)
