"""The paper's four modality-heterogeneity scenarios, plus the medical ones over datasets.

Each function takes the clients' sample lists (``list[list[Sample]]``) and returns a
:class:`ScenarioResult`: the new client lists and an ``info`` dict for the manifest (which
clients hold which modality, the seed, ...). Every random choice comes from a local
``numpy.random.Generator`` built from ``seed`` (:func:`fedmllm.seeding.numpy_rng`), consumed
in client-index order, so results do not depend on any file-system listing order.
The four scenarios are those of FedMLLM (arXiv 2411.14717).

- ``aligned``: every sample keeps image and text.
- ``missing`` (rate β): per sample, the text and the image are each dropped independently with
  probability β (both may go; the "neither" template is used then).
- ``cross`` (``image_clients`` N of K): N clients chosen at random are image-only, the rest
  text-only.
- ``hybrid`` (presence p): each client holds the image with probability p and the text with
  probability p, independently; a client that draws neither gets a per-sample coin flip
  between image-only and text-only.
- medical ``cross``/``hybrid`` (:func:`medical_cross`, :func:`medical_hybrid`): the modality
  decides the *dataset*: image clients get image+question VQA samples, text clients text-only
  QA samples, each dataset split equally among the clients that hold it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..seeding import numpy_rng
from .types import Sample

SCENARIOS = ("aligned", "missing", "cross", "hybrid")

__all__ = [
    "SCENARIOS",
    "ScenarioResult",
    "aligned",
    "apply_scenario",
    "cross",
    "hybrid",
    "medical_aligned",
    "medical_cross",
    "medical_hybrid",
    "missing",
]


@dataclass
class ScenarioResult:
    clients: list[list[Sample]]
    info: dict = field(default_factory=dict)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return numpy_rng(int(seed), 100 + stream)


def _check_rate(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def aligned(clients: list[list[Sample]]) -> ScenarioResult:
    """Every sample keeps what it has (image and text for the paired datasets)."""
    return ScenarioResult([list(c) for c in clients], {"scenario": "aligned"})


def missing(clients: list[list[Sample]], rate: float, seed: int) -> ScenarioResult:
    """Per sample: keep the text w.p. ``1 - rate`` and, independently, the image w.p. ``1 - rate``.

    Two uniform draws per sample, text first (as the FedMLLM code), in client then sample
    order.
    """
    rate = _check_rate("missing_rate", rate)
    rng = _rng(seed, 1)
    out = []
    for c in clients:
        u = rng.random((len(c), 2))
        keep_text, keep_image = u[:, 0] >= rate, u[:, 1] >= rate
        out.append([s.with_modality(bool(i), bool(t))
                    for s, t, i in zip(c, keep_text, keep_image)])
    return ScenarioResult(out, {"scenario": "missing", "missing_rate": rate, "seed": seed})


def _choose_image_clients(num_clients: int, image_clients: int, seed: int) -> list[int]:
    if not 0 <= image_clients <= num_clients:
        raise ValueError(
            f"image_clients must be between 0 and the number of clients ({num_clients}), "
            f"got {image_clients}"
        )
    rng = _rng(seed, 2)
    return sorted(int(k) for k in rng.choice(num_clients, size=image_clients, replace=False))


def cross(clients: list[list[Sample]], image_clients: int, seed: int) -> ScenarioResult:
    """``image_clients`` randomly chosen clients become image-only, the others text-only."""
    chosen = _choose_image_clients(len(clients), image_clients, seed)
    out = [
        [s.with_modality(image=(k in chosen), text=(k not in chosen)) for s in c]
        for k, c in enumerate(clients)
    ]
    return ScenarioResult(out, {"scenario": "cross", "image_clients": chosen, "seed": seed})


def _draw_presence(num_clients: int, presence: float, seed: int):
    presence = _check_rate("presence", presence)
    rng = _rng(seed, 3)
    pres = rng.random((num_clients, 2)) < presence  # column 0 image, column 1 text
    return rng, pres


def hybrid(clients: list[list[Sample]], presence: float, seed: int) -> ScenarioResult:
    """Per client: image w.p. ``presence``, text w.p. ``presence`` (independent); a client with
    neither gets a per-sample coin flip between image-only and text-only."""
    rng, pres = _draw_presence(len(clients), presence, seed)
    out = []
    for k, c in enumerate(clients):
        img, txt = bool(pres[k, 0]), bool(pres[k, 1])
        if img or txt:
            out.append([s.with_modality(img, txt) for s in c])
        else:
            flips = rng.random(len(c)) < 0.5
            out.append([s.with_modality(bool(f), not f) for s, f in zip(c, flips)])
    info = {
        "scenario": "hybrid",
        "presence": float(presence),
        "client_presence": [{"image": bool(p[0]), "text": bool(p[1])} for p in pres],
        "seed": seed,
    }
    return ScenarioResult(out, info)


def apply_scenario(
    clients: list[list[Sample]],
    scenario: str,
    seed: int,
    missing_rate: float = 0.5,
    image_clients: int = 3,
    presence: float = 0.7,
) -> ScenarioResult:
    """Dispatch on the scenario name (``aligned``, ``missing``, ``cross``, ``hybrid``)."""
    if scenario == "aligned":
        return aligned(clients)
    if scenario == "missing":
        return missing(clients, missing_rate, seed)
    if scenario == "cross":
        return cross(clients, image_clients, seed)
    if scenario == "hybrid":
        return hybrid(clients, presence, seed)
    raise ValueError(f"unknown scenario {scenario!r} (expected one of {SCENARIOS})")


# ----------------------------------------------------------------------------- medical


def _split_into(data: list[Sample], holders: list[int], num_clients: int, seed: int,
                stream: int) -> list[list[Sample]]:
    """``data`` split equally among ``holders`` (others get nothing)."""
    out: list[list[Sample]] = [[] for _ in range(num_clients)]
    rng = _rng(seed, 10 + stream)
    order = sorted(range(len(data)), key=lambda i: (str(data[i].id), i))
    order = [order[i] for i in rng.permutation(len(order))]
    parts = np.array_split(np.array(order, dtype=np.int64), len(holders)) if holders else []
    for k, part in zip(holders, parts):
        out[k] = [data[i] for i in part]
    return out


def _merge(num_clients, image_parts, text_parts, seed) -> list[list[Sample]]:
    rng = _rng(seed, 4)
    out = []
    for k in range(num_clients):
        both = image_parts[k] + text_parts[k]
        if image_parts[k] and text_parts[k]:
            both = [both[i] for i in rng.permutation(len(both))]
        out.append(both)
    return out


def _unused(n_img, n_txt, img_holders, txt_holders) -> dict:
    return {"image": n_img if not img_holders else 0, "text": n_txt if not txt_holders else 0}


def medical_aligned(image_data: list[Sample], text_data: list[Sample], num_clients: int,
                    seed: int) -> ScenarioResult:
    """Every client holds an equal share of both datasets."""
    holders = list(range(num_clients))
    img = _split_into(image_data, holders, num_clients, seed, 1)
    txt = _split_into(text_data, holders, num_clients, seed, 2)
    return ScenarioResult(_merge(num_clients, img, txt, seed),
                          {"scenario": "aligned", "seed": seed})


def medical_cross(image_data: list[Sample], text_data: list[Sample], num_clients: int,
                  image_clients: int, seed: int) -> ScenarioResult:
    """``image_clients`` random clients share the image (VQA) data equally, the others the
    text-only QA data. With 0 or all clients as image clients one dataset goes unused (counted
    in ``info["unused"]``)."""
    chosen = _choose_image_clients(num_clients, image_clients, seed)
    text_holders = [k for k in range(num_clients) if k not in chosen]
    img = _split_into(image_data, chosen, num_clients, seed, 1)
    txt = _split_into(text_data, text_holders, num_clients, seed, 2)
    info = {"scenario": "cross", "image_clients": chosen, "seed": seed,
            "unused": _unused(len(image_data), len(text_data), chosen, text_holders)}
    return ScenarioResult(_merge(num_clients, img, txt, seed), info)


def medical_hybrid(image_data: list[Sample], text_data: list[Sample], num_clients: int,
                   presence: float, seed: int) -> ScenarioResult:
    """Each client holds the image data w.p. ``presence`` and the text data w.p. ``presence``;
    a client drawing neither gets one of the two by a coin flip (per client: the modality
    decides the dataset). Each dataset is split equally among its holders; a client holding
    both gets one share of each, shuffled together. No division by zero when nobody holds a
    modality: that dataset goes unused (``info["unused"]``)."""
    rng, pres = _draw_presence(num_clients, presence, seed)
    pres = pres.copy()
    for k in range(num_clients):
        if not pres[k].any():
            pres[k, 0 if rng.random() < 0.5 else 1] = True
    img_holders = [k for k in range(num_clients) if pres[k, 0]]
    txt_holders = [k for k in range(num_clients) if pres[k, 1]]
    img = _split_into(image_data, img_holders, num_clients, seed, 1)
    txt = _split_into(text_data, txt_holders, num_clients, seed, 2)
    info = {
        "scenario": "hybrid",
        "presence": float(presence),
        "client_presence": [{"image": bool(p[0]), "text": bool(p[1])} for p in pres],
        "seed": seed,
        "unused": _unused(len(image_data), len(text_data), img_holders, txt_holders),
    }
    return ScenarioResult(_merge(num_clients, img, txt, seed), info)
