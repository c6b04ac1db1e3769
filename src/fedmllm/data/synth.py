"""The offline synthetic multimodal benchmark (``synth``) and the pre-training corpus.

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
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
from PIL import Image, ImageDraw

from .prompts import (
    LETTERS,
    MC_TEMPLATES,
    SYNTH_BINARY_OPTIONS,
    SYNTH_MULTICLASS_OPTIONS,
    build_prompt,
    mc_answer,
    mc_prompt,
)
from .types import Sample

SIZE = 32
#: bumped whenever make_pretrain_corpus / corpus_text change (part of the tiny model's cache key)
PRETRAIN_CORPUS_VERSION = 3
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
# Named colours for VQA and the pre-training corpus (answers are these names).
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
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

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


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int = 18):
    j = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(min(255, max(0, c + int(d)))) for c, d in zip(rgb, j))


def _luminance(rgb) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _ink_for(bg) -> tuple[int, int, int]:
    return (15, 15, 15) if _luminance(bg) > 140 else (245, 245, 245)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill=None, outline=None, width=1):
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


def _digit_image(rng: np.random.Generator, bg, frame: str | None = None) -> tuple[Image.Image, int]:
    """A background colour with a random real digit drawn large (optionally inside a frame)."""
    images, targets = _digits()
    idx = int(rng.integers(len(images)))
    bg = _jitter(rng, bg)
    ink = _ink_for(bg)
    im = Image.new("RGB", (SIZE, SIZE), bg)
    if frame is None:
        size, off = 26, 3
    else:
        draw = ImageDraw.Draw(im)
        _draw_shape(draw, frame, (1, 1, SIZE - 2, SIZE - 2), outline=ink, width=3)
        size, off = 16, 8
    im.paste(ink, (off, off), _digit_mask(idx, size))
    return im, int(targets[idx])


def _slots(count: int) -> list[tuple[int, int, int, int]]:
    """Non-overlapping boxes for ``count`` shapes, large enough to be seen at 32x32."""
    if count == 1:
        return [(5, 5, 26, 26)]
    if count == 2:
        return [(2, 9, 14, 21), (17, 9, 29, 21)]
    if count == 3:
        return [(2, 2, 14, 14), (17, 2, 29, 14), (9, 17, 21, 29)]
    return [(2, 2, 14, 14), (17, 2, 29, 14), (2, 17, 14, 29), (17, 17, 29, 29)]


def _shapes_image(rng, bg_rgb, fg_rgb, shape: str, count: int) -> Image.Image:
    im = Image.new("RGB", (SIZE, SIZE), _jitter(rng, bg_rgb, 10))
    draw = ImageDraw.Draw(im)
    fg = _jitter(rng, fg_rgb, 10)
    for box in _slots(count):
        _draw_shape(draw, shape, box, fill=fg)
    return im


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


def _gen_binary(rng, n: int, prefix: str, params: dict) -> list[Sample]:
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
        image, digit = _digit_image(rng, family[cname])
        text, word = _caption(rng, BINARY_WORDS[ct], BINARY_SENTENCES)
        y = _noisy(rng, _binary_label(ci, ct, rule), 2, noise)
        out.append(
            Sample(
                id=f"{prefix}{i}",
                task=task,
                answer=mc_answer(opts, y),
                image=image,
                text=text,
                label=y,
                options=opts,
                meta={"cues": {"image": ci, "text": ct}, "colour": cname, "digit": digit,
                      "word": word},
            )
        )
    return out


def _gen_multiclass(rng, n: int, prefix: str, params: dict) -> list[Sample]:
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
        image, digit = _digit_image(rng, family[cname], frame=frame)
        text, word = _caption(rng, MULTICLASS_WORDS[ct], MULTICLASS_SENTENCES)
        y = _noisy(rng, 2 * ci + ct, 8, noise)
        out.append(
            Sample(
                id=f"{prefix}{i}",
                task=task,
                answer=mc_answer(opts, y),
                image=image,
                text=text,
                label=y,
                options=opts,
                meta={"cues": {"image": ci, "text": ct}, "colour": cname, "frame": frame,
                      "digit": digit, "word": word},
            )
        )
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


def _gen_vqa(rng, n: int, prefix: str, params: dict, text_fraction: float) -> list[Sample]:
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
        image = _shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, count)
        q, a, atype, qtype = _vqa_question(rng, bg, fg, shape, count)
        out.append(Sample(id=f"{prefix}{i}", task=task, answer=a, question=q, image=image,
                          answer_type=atype,
                          meta={"source": "vqa", "question_type": qtype, "background": bg,
                                "colour": fg, "shape": shape, "count": count}))
    return out


def make_synth(
    task: str, n_train: int, n_test: int, seed: int, **params
) -> tuple[list[Sample], list[Sample]]:
    """Generate the synthetic benchmark ``task`` (``binary``, ``multiclass`` or ``vqa``).

    Parameters (keyword, all optional):

    - ``label_noise`` (float, 0): classification labels replaced by a random class w.p. this.
    - ``single_ceiling`` (float in [0.75, 1], 0.8) and ``rule`` (``"and"``/``"xor"``):
      ``binary`` only, see the module docstring.
    - ``text_fraction`` (float, 0.3) / ``test_text_fraction`` (float, 0.0): ``vqa`` only, the
      share of text-only QA samples in the train / test set.

    Returns ``(train, test)``; ids are ``synth-<task>-train-<i>`` / ``...-test-<i>``.
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
        return (_gen_vqa(rng_train, n_train, f"{base}-train-", params, tf),
                _gen_vqa(rng_test, n_test, f"{base}-test-", params, tt))
    return gen(rng_train, n_train, f"{base}-train-", params), gen(
        rng_test, n_test, f"{base}-test-", params
    )


# ----------------------------------------------------------------------------- pre-training corpus

_POSITIONS = {"left": (1, 8, 15, 23), "right": (16, 8, 30, 23),
              "top": (8, 1, 23, 15), "bottom": (8, 16, 23, 30)}
_GENERIC_QA = (
    ("What colour is the sky on a clear day?", "blue"),
    ("What colour is grass?", "green"),
    ("What colour is snow?", "white"),
    ("How many sides does a square have?", "4"),
    ("How many sides does a triangle have?", "3"),
    ("Which shape has no corners?", "circle"),
    ("What is the opposite of yes?", "no"),
    ("What is the opposite of hot?", "cold"),
    ("What is the opposite of left?", "right"),
    ("What is the opposite of top?", "bottom"),
)
_TEXT_SENTENCES = (
    "the cat sat on the mat",
    "a bright morning by the river",
    "we walked home after the game",
    "the train arrives at noon",
    "fresh bread from the market",
    "a quiet evening with friends",
    "the old bridge crosses the valley",
    "children play in the park",
)


_MC_INSTRUCTIONS = (
    "Choose the correct option.",
    "Pick the right answer from the list.",
    "Which option is correct?",
)


def _pretrain_choice(rng: np.random.Generator, sid: str, question: str, correct: str,
                     pool: list[str], image=None, kind: str = "choice") -> Sample:
    """Generic multiple-choice instruction following: ``(C) green`` answers.

    Real VLMs are instruction-tuned and know this answer format; the wording and concepts
    differ from the benchmark tasks (no safe/unsafe, no scene categories).
    """
    wrong = [w for w in pool if w != correct]
    k = int(rng.integers(2, min(6, len(wrong) + 1) + 1))
    picks = [wrong[int(j)] for j in rng.choice(len(wrong), size=k - 1, replace=False)]
    pos = int(rng.integers(k))
    options = picks[:pos] + [correct] + picks[pos:]
    block = "".join(f"\n({LETTERS[j]}) {o}" for j, o in enumerate(options))
    instruction = _MC_INSTRUCTIONS[int(rng.integers(len(_MC_INSTRUCTIONS)))]
    prompt = f"{instruction}\n{question}\nOptions:{block}\nAnswer with the letter."
    return Sample(id=sid, task="pretrain", answer=f"({LETTERS[pos]}) {correct}", question=prompt,
                  image=image, meta={"kind": kind})


def _pretrain_sample(rng: np.random.Generator, i: int) -> Sample:
    kind = int(rng.integers(14))
    names = list(COLOURS)
    sid = f"pretrain-{i}"
    task = "pretrain"
    if kind in (0, 1, 2):  # shapes image: caption / colour / shape question
        bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        count = int(rng.integers(1, 5))
        im = _shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, count)
        plural = shape if count == 1 else shape + "s"
        if kind == 0:
            q = ("Describe the image.", "What do you see?", "Write a caption.")[
                int(rng.integers(3))]
            a = f"{NUMBER_WORDS[count]} {fg} {plural} on a {bg} background"
            if count == 1:
                a = f"a {fg} {shape} on a {bg} background"
        elif kind == 1:
            q, a = "Which colour is the background of this picture?", bg
        else:
            q, a = "Name the shape in the picture.", shape
        return Sample(id=sid, task=task, answer=a, question=q, image=im,
                      meta={"kind": "shapes"})
    if kind == 3:  # position of a single shape
        bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        pos = list(_POSITIONS)[int(rng.integers(4))]
        im = Image.new("RGB", (SIZE, SIZE), _jitter(rng, COLOURS[bg], 10))
        _draw_shape(ImageDraw.Draw(im), shape, _POSITIONS[pos], fill=_jitter(rng, COLOURS[fg], 10))
        return Sample(id=sid, task=task, answer=pos, question=f"Where is the {shape}?", image=im,
                      meta={"kind": "position"})
    if kind == 4:  # a digit in a colour
        bgname = names[int(rng.integers(len(names)))]
        im, digit = _digit_image(rng, COLOURS[bgname])
        q = ("What is written in the image?", "Describe the image.")[int(rng.integers(2))]
        a = (str(digit) if q.startswith("What is written")
             else f"the digit {digit} on a {bgname} background")
        return Sample(id=sid, task=task, answer=a, question=q, image=im, meta={"kind": "digit"})
    if kind == 5:  # caption / image agreement (image + text)
        bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        im = _shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, 1)
        match = bool(rng.integers(2))
        if match:
            cap_bg = bg
        else:
            cap_bg = [c for c in names if c not in (bg, fg)][int(rng.integers(len(names) - 2))]
        caption = f"caption: a {shape} on a {cap_bg} background"
        return Sample(id=sid, task=task, answer="yes" if match else "no",
                      question=f"{caption}\nDoes the caption describe the picture?", image=im,
                      meta={"kind": "match", "text": caption})
    if kind == 6:  # reading the text
        sent = _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))]
        words = sent.split()
        which = int(rng.integers(3))
        if which == 0:
            q, a = "What is the last word of the text?", words[-1]
        elif which == 1:
            q, a = "What is the first word of the text?", words[0]
        else:
            q, a = "How many words does the text have?", str(len(words))
        return Sample(id=sid, task=task, answer=a, question=f"{sent}\n{q}",
                      meta={"kind": "reading", "text": sent})
    if kind in (8, 9):  # multiple choice about an image
        bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        im = _shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, 1)
        if kind == 8:
            return _pretrain_choice(rng, sid, "What colour is the background?", bg, names, im)
        return _pretrain_choice(rng, sid, "Which shape is shown?", shape, list(SHAPES), im)
    if kind == 10:  # multiple choice about a text
        sent = _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))]
        words = sent.split()
        pool = sorted({w for t in _TEXT_SENTENCES for w in t.split()} - set(words[1:]))
        return _pretrain_choice(rng, sid, f"{sent}\nWhich word starts the text?", words[0], pool)
    if kind == 11:  # world knowledge about words (what a language model knows of them)
        table = (BINARY_WORDS, ("pleasant", "alarming")) if rng.integers(2) else \
            (MULTICLASS_WORDS, ("urgent", "routine"))
        words, names_ = table
        group = int(rng.integers(2))
        w = words[group][int(rng.integers(len(words[group])))]
        question = f"Is the word {w} {names_[0]} or {names_[1]}?"
        return Sample(id=sid, task=task, answer=names_[group], question=question,
                      meta={"kind": "word_knowledge"})
    if kind == 12:  # colour temperature of a background
        warm = bool(rng.integers(2))
        family = WARM if warm else COOL
        cname = list(family)[int(rng.integers(len(family)))]
        fg = "white" if warm else "black"
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        im = _shapes_image(rng, family[cname], COLOURS[fg], shape, int(rng.integers(1, 4)))
        return Sample(id=sid, task=task, answer="warm" if warm else "cool",
                      question="Is the background colour warm or cool?", image=im,
                      meta={"kind": "colour_knowledge"})
    if kind == 13:  # copying: every word of the lexicon gets trained input/output embeddings
        lexicon = _lexicon()
        words = [lexicon[int(j)] for j in rng.choice(len(lexicon), size=int(rng.integers(2, 6)))]
        phrase = " ".join(words)
        return Sample(id=sid, task=task, answer=phrase, question=f"Repeat after me: {phrase}",
                      meta={"kind": "repeat"})
    q, a = _GENERIC_QA[int(rng.integers(len(_GENERIC_QA)))]
    return Sample(id=sid, task=task, answer=a, question=q, meta={"kind": "generic_qa"})


_LEXICON: tuple[str, ...] | None = None


def _lexicon() -> tuple[str, ...]:
    """Every word the tokenizer corpus uses in instructions, options and captions.

    A language model has seen its whole vocabulary in pre-training; copying random words
    gives the tiny base the same property (no untrained output embeddings), without any
    of the benchmark's label rules.
    """
    global _LEXICON
    if _LEXICON is None:
        import re

        parts: list[str] = []
        for name, tpl in MC_TEMPLATES.items():
            parts.append(mc_prompt(name, "x", True, "plain"))
            parts.extend([tpl.question, *tpl.options])
        parts.extend(w for group in BINARY_WORDS.values() for w in group)
        parts.extend(w for group in MULTICLASS_WORDS.values() for w in group)
        parts.extend(BINARY_SENTENCES + MULTICLASS_SENTENCES + _TEXT_SENTENCES)
        parts.extend(list(COLOURS) + list(SHAPES) + list(NUMBER_WORDS))
        words = {w for p in parts for w in re.findall(r"[a-z][a-z_\-']*", p.lower())}
        _LEXICON = tuple(sorted(words))
    return _LEXICON


def make_pretrain_corpus(n: int, seed: int) -> list[Sample]:
    """A generic multimodal corpus for the tiny base model's centralized pre-training.

    Captions and colour/shape/position/digit questions about generated images, caption-image
    agreement (image + text), reading questions about a short text, and generic text-only QA.
    Deliberately *not* the benchmark tasks: no options, different wording and concepts.
    Samples have ``task = "pretrain"`` and ``text = None``: a sample's ``question`` is its whole
    user prompt (a caption or sentence to read is its first line, also kept in ``meta["text"]``),
    so ``s.question`` and ``build_prompt(s)`` are the same string.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    return [_pretrain_sample(rng, i) for i in range(n)]


def corpus_text(n: int, seed: int) -> list[str]:
    """Plain strings for training the byte-level BPE tokenizer.

    Contains the prompts and answers of ``n`` pre-training samples and ``n`` samples of each
    synth task (under every modality case and both prompt strategies), all option names, and
    the multiple-choice template wording of every task (Hateful-Memes and CrisisMMD included).
    """
    from .prompts import STRATEGIES

    out: list[str] = []
    for s in make_pretrain_corpus(n, seed):
        out.extend([build_prompt(s), s.answer])
    cases = [(True, True), (True, False), (False, True), (False, False)]
    for task in TASKS:
        train, _ = make_synth(task, n, 0, seed)
        for j, s in enumerate(train):
            img, txt = cases[j % 4] if task != "vqa" else (True, True)
            strat = STRATEGIES[(j // 4) % 2]
            out.extend([build_prompt(s.with_modality(img, txt), strat), s.answer])
    example = {"hateful_memes": "when you see the meme and laugh",
               "crisismmd": "flood waters rising near the bridge, volunteers needed"}
    for task, tpl in MC_TEMPLATES.items():
        text = example.get(task, "a short caption")
        for strat in STRATEGIES:
            for img, txt in cases:
                out.append(mc_prompt(task, text if txt else None, img, strat))
        out.extend(mc_answer(tpl.options, k) for k in range(len(tpl.options)))
    out.extend(q + " " + a for q, a, _ in fact_table())
    return out


__all__ = [
    "COLOURS",
    "SHAPES",
    "TASKS",
    "TASK_NAMES",
    "ceilings",
    "corpus_text",
    "fact_table",
    "make_pretrain_corpus",
    "make_synth",
]
