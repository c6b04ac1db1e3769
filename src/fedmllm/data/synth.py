"""The offline synthetic multimodal benchmark (``synth``).

Images are 32x32 RGB ``PIL.Image`` objects built in memory from scikit-learn's digits (real 8x8
handwritten digits, upscaled and thickened) and PIL drawings; texts are short generated captions.
Every random choice comes from a ``numpy.random.Generator`` seeded by the caller, so the same seed
gives identical samples (pixel for pixel, string for string). The train and test sets use
independent child streams of the seed: changing ``n_train`` does not change the test set.

Tasks
-----
``binary`` (the Hateful-Memes role; options ``(A) safe (B) unsafe``)
    Latent cues: an image cue ``c_i`` (background colour *warm* = 1 vs *cool* = 0, several hues
    each; a random digit drawn large in black/white ink is visual content that carries no
    label information) and a text cue ``c_t`` (the caption contains an *alarming* word = 1 or
    a *pleasant* word = 0, inside one of several filler sentences). The label is
    ``y = c_i AND c_t`` (rule ``"and"``, default) -- unsafe only when both the picture and the
    words are -- or ``y = c_i XOR c_t`` (rule ``"xor"``). For ``"and"`` the cue cells have
    probabilities ``P(1,1) = 1/2``, ``P(1,0) = P(0,1) = 1 - s``, ``P(0,0) = 2s - 3/2`` where
    ``s = single_ceiling`` in ``[0.75, 1]`` is the Bayes accuracy from either modality alone
    (classes are balanced; with both modalities the accuracy is 100 %). ``"xor"`` has uniform
    cells and single-modality ceilings of 50 %.
``multiclass`` (the CrisisMMD role; 8 options A-H)
    Image category ``c_i`` in 0..3 = colour family (warm/cool) x frame shape (circle/square)
    drawn around the digit; text category ``c_t`` in {0, 1} = urgent vs routine wording;
    ``y = 2 c_i + c_t``. Ceilings: both 100 %, image only 50 %, text only 25 % (chance 12.5 %).
``vqa`` (the VQA-RAD + MedAlpaca role)
    Images of 1-3 identical shapes (circle/square/triangle) of one colour on a background of
    another colour; closed questions (yes/no, ``answer_type = "CLOSED"``) and open questions
    with a one-word answer (colour, shape or count, ``"OPEN"``). A fraction of the training
    samples are text-only factual QA about a fixed invented fact table (``image=None``,
    ``meta["source"] = "text_qa"``), the MedAlpaca role.

``label_noise`` (default 0) replaces a classification label by a uniformly drawn class with
that probability. :func:`ceilings` gives the exact Bayes-optimal accuracies of each task from
its generative process.

The image helpers (:func:`digit_image`, :func:`shapes_image`, :func:`jitter`,
:func:`draw_shape`) and the word lists are public: the built-in model's pre-training corpus
(:mod:`fedmllm.model.tiny.corpus`) draws its images and words with them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .prompts import (
    SYNTH_BINARY_OPTIONS,
    SYNTH_MULTICLASS_OPTIONS,
    mc_answer,
)
from .types import Sample

SIZE = 32
TASKS = ("binary", "multiclass", "vqa")
TASK_NAMES = {"binary": "synth_binary", "multiclass": "synth_multiclass", "vqa": "synth_vqa"}

# ----------------------------------------------------------------------------- palettes

WARM = {
    "red": (215, 40, 40),
    "orange": (235, 130, 25),
    "yellow": (225, 205, 35),
}
COOL = {
    "blue": (40, 70, 215),
    "green": (35, 160, 60),
    "teal": (30, 165, 175),
}
# Named colours for VQA and the built-in model's pre-training corpus (answers are these names).
COLOURS = {
    "red": (215, 40, 40),
    "orange": (235, 130, 25),
    "yellow": (225, 205, 35),
    "green": (35, 160, 60),
    "blue": (40, 70, 215),
    "purple": (135, 50, 175),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")

# ----------------------------------------------------------------------------- word lists

BINARY_WORDS = {
    1: ("threat", "riot", "weapon", "insult", "attack", "poison"),
    0: ("picnic", "garden", "concert", "puppy", "sunrise", "bakery"),
}
BINARY_SENTENCES = (
    "they posted about the {w} again",
    "look at this {w}",
    "nobody expected the {w}",
    "a story about a {w} downtown",
    "the {w} was all anyone discussed",
    "my neighbour shared the {w}",
)
MULTICLASS_WORDS = {
    0: ("help", "urgent", "trapped", "emergency", "rescue", "evacuate"),
    1: ("update", "schedule", "weather", "review", "recap", "photo"),
}
MULTICLASS_SENTENCES = (
    "{w} near the station this morning",
    "posting a {w} from the town centre",
    "please read this {w} now",
    "local group shares {w} for the area",
    "another {w} from the coast",
)

# ----------------------------------------------------------------------------- image helpers


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 handwritten 8x8 digits as (images uint8 0..16, targets)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)


@functools.lru_cache(maxsize=4096)
def _digit_mask(index: int, size: int) -> Image.Image:
    """Digit ``index`` upscaled to ``size`` x ``size`` and thresholded into a thick ``L`` mask."""
    images, _ = _digits()
    small = Image.fromarray((images[index] * 15).astype(np.uint8), mode="L")
    big = small.resize((size, size), Image.BILINEAR)
    return big.point(lambda v: 255 if v > 45 else 0)


def jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 18):
    """``rgb`` with each channel moved by a uniform integer in ``[-amount, amount]`` (clipped)."""
    j = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(min(255, max(0, c + int(d)))) for c, d in zip(rgb, j))


def _luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _ink_for(bg) -> tuple[int, int, int]:
    return (15, 15, 15) if _luminance(bg) > 140 else (245, 245, 245)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill=None, outline=None, width=1):
    """Draw a ``circle``, ``square`` or ``triangle`` inside ``box`` (filled and/or outlined)."""
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "square":
        draw.rectangle(box, fill=fill, outline=outline, width=width)
    elif shape == "triangle":
        pts = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
        if fill is not None:
            draw.polygon(pts, fill=fill)
        if outline is not None:
            draw.line(pts + [pts[0]], fill=outline, width=width)
    else:  # pragma: no cover - internal
        raise ValueError(shape)


def _draw_digit(rng: np.random.Generator, bg) -> tuple[int, tuple[int, int, int]]:
    """The random draws of :func:`digit_image`: a digit's index, then the jittered background."""
    idx = int(rng.integers(len(_digits()[0])))
    return idx, jitter(rng, bg)


def _render_digit(idx: int, bg, frame: str | None) -> Image.Image:
    """Digit ``idx`` drawn large in ink that contrasts with ``bg`` (no random draw)."""
    ink = _ink_for(bg)
    im = Image.new("RGB", (SIZE, SIZE), bg)
    if frame is None:
        size, off = 26, 3
    else:
        draw = ImageDraw.Draw(im)
        draw_shape(draw, frame, (1, 1, SIZE - 2, SIZE - 2), outline=ink, width=3)
        size, off = 16, 8
    im.paste(ink, (off, off), _digit_mask(idx, size))
    return im


def digit_image(rng: np.random.Generator, bg, frame: str | None = None) -> tuple[Image.Image, int]:
    """A background colour with a random real digit drawn large (optionally inside a frame)."""
    idx, bg = _draw_digit(rng, bg)
    return _render_digit(idx, bg, frame), int(_digits()[1][idx])


def _slots(count: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping boxes for ``count`` shapes, large enough to be seen at 32x32."""
    if count == 1:
        return [(5, 5, 26, 26)]
    if count == 2:
        return [(2, 9, 14, 21), (17, 9, 29, 21)]
    if count == 3:
        return [(2, 2, 14, 14), (17, 2, 29, 14), (9, 17, 21, 29)]
    return [(2, 2, 14, 14), (17, 2, 29, 14), (2, 17, 14, 29), (17, 17, 29, 29)]


def _render_shapes(bg, fg, shape: str, count: int) -> Image.Image:
    im = Image.new("RGB", (SIZE, SIZE), bg)
    draw = ImageDraw.Draw(im)
    for box in _slots(count):
        draw_shape(draw, shape, box, fill=fg)
    return im


def shapes_image(rng, bg_rgb, fg_rgb, shape: str, count: int) -> Image.Image:
    """``count`` (1-4) identical shapes of one colour on a background of another."""
    bg = jitter(rng, bg_rgb, 10)
    return _render_shapes(bg, jitter(rng, fg_rgb, 10), shape, count)


@dataclass(frozen=True)
class PendingImage:
    """A generated image not rendered yet: every random draw behind it is made, so calling it
    gives, pixel for pixel, the image the generator would have rendered in its place (what
    lets a node draw the whole training set's labels but render only its own client's
    images: :func:`make_synth` with ``lazy=True``)."""

    render: Callable[..., Image.Image]
    args: tuple

    def __call__(self) -> Image.Image:
        return self.render(*self.args)


def _image(lazy: bool, render: Callable[..., Image.Image], *args):
    return PendingImage(render, args) if lazy else render(*args)


# ----------------------------------------------------------------------------- cue tables


def _binary_cells(single_ceiling: float, rule: str) -> np.ndarray:
    """``P[c_i, c_t]`` of the binary task's latent cues."""
    if rule == "xor":
        return np.full((2, 2), 0.25)
    if rule != "and":
        raise ValueError(f"binary rule must be 'and' or 'xor', got {rule!r}")
    s = float(single_ceiling)
    if not 0.75 <= s <= 1.0:
        raise ValueError(f"single_ceiling must be in [0.75, 1] for rule 'and', got {s}")
    b = 1.0 - s
    return np.array([[0.5 - 2 * b, b], [b, 0.5]])


def _binary_label(ci: int, ct: int, rule: str) -> int:
    return int(ci and ct) if rule == "and" else int(ci != ct)


def _joint_table(task: str, params: dict) -> np.ndarray:
    """``P[c_i, c_t, y]`` including label noise."""
    noise = float(params.get("label_noise", 0.0))
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {noise}")
    if task == "binary":
        rule = params.get("rule", "and")
        cells = _binary_cells(params.get("single_ceiling", 0.8), rule)
        k = 2
        table = np.zeros((2, 2, k))
        for ci in range(2):
            for ct in range(2):
                table[ci, ct, _binary_label(ci, ct, rule)] = cells[ci, ct]
    elif task == "multiclass":
        k = 8
        table = np.zeros((4, 2, k))
        for ci in range(4):
            for ct in range(2):
                table[ci, ct, 2 * ci + ct] = 1 / 8
    else:
        raise ValueError(f"ceilings are defined for 'binary' and 'multiclass', not {task!r}")
    cell = table.sum(axis=2, keepdims=True)
    return (1 - noise) * table + noise * cell / k


def ceilings(task: str, **params) -> dict[str, float]:
    """Exact Bayes-optimal accuracies of a classification task from its generative process.

    Returns ``{"image_text", "image_only", "text_only", "chance"}`` where ``chance`` is the
    majority-class rate. ``params`` are the same keyword arguments as :func:`make_synth`.
    """
    p = _joint_table(task, params)
    return {
        "image_text": float(p.max(axis=2).sum()),
        "image_only": float(p.sum(axis=1).max(axis=1).sum()),
        "text_only": float(p.sum(axis=0).max(axis=1).sum()),
        "chance": float(p.sum(axis=(0, 1)).max()),
    }


# ----------------------------------------------------------------------------- task generators


def _noisy(rng: np.random.Generator, y: int, k: int, noise: float) -> int:
    if noise > 0 and rng.random() < noise:
        return int(rng.integers(k))
    return y


def _caption(rng, words: Iterable[str], sentences: tuple[str, ...]) -> tuple[str, str]:
    words = tuple(words)
    w = words[int(rng.integers(len(words)))]
    return sentences[int(rng.integers(len(sentences)))].format(w=w), w


def _mc_sample(sid: str, task: str, opts: tuple[str, ...], y: int, image, text: str,
               meta: dict) -> Sample:
    """A multiple-choice sample with label ``y`` of ``opts``."""
    return Sample(id=sid, task=task, answer=mc_answer(opts, y), image=image, text=text,
                  label=y, options=opts, meta=meta)


def _gen_binary(rng, n: int, prefix: str, params: dict, lazy: bool = False) -> list[Sample]:
    rule = params.get("rule", "and")
    noise = float(params.get("label_noise", 0.0))
    cells = _binary_cells(params.get("single_ceiling", 0.8), rule).ravel()
    task = TASK_NAMES["binary"]
    opts = SYNTH_BINARY_OPTIONS
    out = []
    for i in range(n):
        cell = int(rng.choice(4, p=cells))
        ci, ct = divmod(cell, 2)
        family = WARM if ci else COOL
        cname = list(family)[int(rng.integers(len(family)))]
        idx, bg = _draw_digit(rng, family[cname])
        image, digit = _image(lazy, _render_digit, idx, bg, None), int(_digits()[1][idx])
        text, word = _caption(rng, BINARY_WORDS[ct], BINARY_SENTENCES)
        y = _noisy(rng, _binary_label(ci, ct, rule), 2, noise)
        out.append(_mc_sample(f"{prefix}{i}", task, opts, y, image, text,
                              {"cues": {"image": ci, "text": ct}, "colour": cname,
                               "digit": digit, "word": word}))
    return out


def _gen_multiclass(rng, n: int, prefix: str, params: dict, lazy: bool = False
                    ) -> list[Sample]:
    noise = float(params.get("label_noise", 0.0))
    task = TASK_NAMES["multiclass"]
    opts = SYNTH_MULTICLASS_OPTIONS
    out = []
    for i in range(n):
        ci = int(rng.integers(4))
        ct = int(rng.integers(2))
        cool, square = divmod(ci, 2)  # 0 warm round, 1 warm square, 2 cool round, 3 cool square
        family = COOL if cool else WARM
        cname = list(family)[int(rng.integers(len(family)))]
        frame = "square" if square else "circle"
        idx, bg = _draw_digit(rng, family[cname])
        image, digit = _image(lazy, _render_digit, idx, bg, frame), int(_digits()[1][idx])
        text, word = _caption(rng, MULTICLASS_WORDS[ct], MULTICLASS_SENTENCES)
        y = _noisy(rng, 2 * ci + ct, 8, noise)
        out.append(_mc_sample(f"{prefix}{i}", task, opts, y, image, text,
                              {"cues": {"image": ci, "text": ct}, "colour": cname,
                               "frame": frame, "digit": digit, "word": word}))
    return out


# The invented fact table of the text-only QA samples (fixed: independent of the data seed, so
# train and test ask about the same facts).
_SYLLABLES = ("zor", "bel", "vin", "tak", "mur", "lio", "pex", "dra", "quo", "sil", "ner", "fal")
_PLACES = ("cave", "lake", "forest", "desert", "mountain", "island", "swamp", "meadow")
_FOODS = ("berries", "fish", "seeds", "roots", "honey", "leaves", "insects", "moss")
_FACT_COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "white", "black")


@functools.lru_cache(maxsize=1)
def fact_table() -> tuple[tuple[str, str, str], ...]:
    """``(question, answer, relation)`` triples about 32 invented creatures (fixed)."""
    rng = np.random.default_rng(20240611)
    names: list[str] = []
    while len(names) < 32:
        a, b = rng.choice(len(_SYLLABLES), size=2, replace=False)
        name = _SYLLABLES[a] + _SYLLABLES[b]
        if name not in names:
            names.append(name)
    facts = []
    for name in names:
        facts.append((f"What colour is a {name}?",
                      _FACT_COLOURS[int(rng.integers(len(_FACT_COLOURS)))], "colour"))
        facts.append((f"Where does a {name} live?",
                      _PLACES[int(rng.integers(len(_PLACES)))], "place"))
        facts.append((f"What does a {name} eat?", _FOODS[int(rng.integers(len(_FOODS)))], "food"))
    return tuple(facts)


def _vqa_question(rng, bg: str, fg: str, shape: str, count: int) -> tuple[str, str, str, str]:
    """(question, answer, answer_type, question_type) about a shapes image."""
    kind = int(rng.integers(7))
    yes = bool(rng.integers(2))
    if kind == 0:
        return "What colour is the background?", bg, "OPEN", "colour"
    if kind == 1:
        q = "What colour is the shape?" if count == 1 else "What colour are the shapes?"
        return q, fg, "OPEN", "colour"
    if kind == 2:
        return "What shape is shown?", shape, "OPEN", "shape"
    if kind == 3:
        return "How many shapes are there?", str(count), "OPEN", "count"
    if kind == 4:
        others = [c for c in COLOURS if c not in (bg, fg)]
        c = bg if yes else others[int(rng.integers(len(others)))]
        return f"Is the background {c}?", "yes" if yes else "no", "CLOSED", "colour"
    if kind == 5:
        others = [s for s in SHAPES if s != shape]
        s = shape if yes else others[int(rng.integers(len(others)))]
        return f"Is there a {s} in the image?", "yes" if yes else "no", "CLOSED", "shape"
    others = [k for k in (1, 2, 3) if k != count]
    k = count if yes else others[int(rng.integers(len(others)))]
    return f"Are there {k} shapes?", "yes" if yes else "no", "CLOSED", "count"


def _gen_vqa(rng, n: int, prefix: str, params: dict, text_fraction: float,
             lazy: bool = False) -> list[Sample]:
    task = TASK_NAMES["vqa"]
    names = list(COLOURS)
    facts = fact_table()
    out = []
    for i in range(n):
        if rng.random() < text_fraction:
            q, a, rel = facts[int(rng.integers(len(facts)))]
            out.append(Sample(id=f"{prefix}{i}", task=task, answer=a, question=q,
                              answer_type="OPEN",
                              meta={"source": "text_qa", "question_type": rel}))
            continue
        bg, fg = rng.choice(len(names), size=2, replace=False)
        bg, fg = names[int(bg)], names[int(fg)]
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        count = int(rng.integers(1, 4))
        drawn = jitter(rng, COLOURS[bg], 10), jitter(rng, COLOURS[fg], 10)
        image = _image(lazy, _render_shapes, *drawn, shape, count)
        q, a, atype, qtype = _vqa_question(rng, bg, fg, shape, count)
        out.append(Sample(id=f"{prefix}{i}", task=task, answer=a, question=q, image=image,
                          answer_type=atype,
                          meta={"source": "vqa", "question_type": qtype, "background": bg,
                                "colour": fg, "shape": shape, "count": count}))
    return out


def make_synth(
    task: str, n_train: int, n_test: int, seed: int, *, lazy: bool = False, **params
) -> tuple[list[Sample], list[Sample]]:
    """Generate the synthetic benchmark ``task`` (``binary``, ``multiclass`` or ``vqa``).

    Parameters (keyword, all optional):

    - ``label_noise`` (float, 0): classification labels replaced by a random class w.p. this.
    - ``single_ceiling`` (float in [0.75, 1], 0.8) and ``rule`` (``"and"``/``"xor"``):
      ``binary`` only, see the module docstring.
    - ``text_fraction`` (float, 0.3) / ``test_text_fraction`` (float, 0.0): ``vqa`` only, the
      share of text-only QA samples in the train / test set.

    Returns ``(train, test)``; ids are ``synth-<task>-train-<i>`` / ``...-test-<i>``.
    ``lazy``: the training samples' images are :class:`PendingImage` (every draw made, nothing
    rendered; call one to render it).
    """
    if task not in TASKS:
        raise ValueError(f"unknown synth task {task!r} (expected one of {TASKS})")
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    allowed = {
        "binary": {"label_noise", "single_ceiling", "rule"},
        "multiclass": {"label_noise"},
        "vqa": {"text_fraction", "test_text_fraction"},
    }[task]
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"unknown parameter(s) for synth task {task!r}: {sorted(unknown)}")
    if task != "vqa":
        _joint_table(task, params)  # validates the parameters
    rng_train, rng_test = (np.random.default_rng(s)
                           for s in np.random.SeedSequence(seed).spawn(2))
    base = f"synth-{task}"
    if task == "binary":
        gen = _gen_binary
    elif task == "multiclass":
        gen = _gen_multiclass
    else:
        tf = float(params.get("text_fraction", 0.3))
        tt = float(params.get("test_text_fraction", 0.0))
        if not (0 <= tf <= 1 and 0 <= tt <= 1):
            raise ValueError("text_fraction and test_text_fraction must be in [0, 1]")
        return (_gen_vqa(rng_train, n_train, f"{base}-train-", params, tf, lazy),
                _gen_vqa(rng_test, n_test, f"{base}-test-", params, tt))
    return gen(rng_train, n_train, f"{base}-train-", params, lazy), gen(
        rng_test, n_test, f"{base}-test-", params
    )


__all__ = [
    "COLOURS",
    "SHAPES",
    "TASKS",
    "TASK_NAMES",
    "PendingImage",
    "ceilings",
    "digit_image",
    "draw_shape",
    "fact_table",
    "jitter",
    "make_synth",
    "shapes_image",
]
