"""The built-in model's pre-training corpus and its tokenizer corpus.

:func:`make_pretrain_corpus` is a generic multimodal instruction corpus (captions, colour /
shape / position / digit questions about generated images, caption-image agreement, reading
questions, generic multiple choice, word knowledge, copying) for the short centralized
pre-training of the built-in model (:mod:`fedmllm.model.tiny.pretrain`). It is deliberately
*not* the downstream benchmark: different wording, no benchmark options, no label rules.
:func:`corpus_text` is the text the byte-level BPE tokenizer is trained on
(:func:`fedmllm.model.tiny.build.build_tokenizer`).

Images and words come from the synthetic benchmark's helpers (:mod:`fedmllm.data.synth`), so
the tokenizer and the vision tower see the same kind of input the benchmark gives; the data
layer does not know about this module. Both functions are part of the built-in model's recipe:
:data:`PRETRAIN_CORPUS_VERSION` enters its cache key, and is bumped whenever either output
changes.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image, ImageDraw

from ...data.prompts import (
    LETTERS,
    MC_TEMPLATES,
    STRATEGIES,
    SYNTH_BINARY_OPTIONS,
    build_prompt,
    mc_answer,
    mc_prompt,
)
from ...data.synth import (
    BINARY_SENTENCES,
    BINARY_WORDS,
    COLOURS,
    COOL,
    MULTICLASS_SENTENCES,
    MULTICLASS_WORDS,
    SHAPES,
    SIZE,
    TASKS,
    WARM,
    digit_image,
    draw_shape,
    fact_table,
    jitter,
    make_synth,
    shapes_image,
)
from ...data.types import Sample
from ...seeding import numpy_rng

#: bumped whenever make_pretrain_corpus / corpus_text change (part of the tiny model's cache key)
PRETRAIN_CORPUS_VERSION = 4
NUMBER_WORDS = ("zero", "one", "two", "three", "four")

__all__ = ["PRETRAIN_CORPUS_VERSION", "corpus_text", "make_pretrain_corpus"]

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


#: the kinds of pre-training sample, drawn uniformly from this tuple (a kind listed twice is
#: drawn twice as often); 7 falls through to generic QA. Word knowledge (11) and the tone of a
#: text (14) are drawn more often: a small language model trained from scratch learns what a
#: word means far more slowly than it learns to see a colour (at equal shares, the base answered
#: word-knowledge questions at chance after pre-training while it saw colours perfectly).
_KINDS: tuple[int, ...] = (*range(15), 11, 11, 14, 14, 14)


#: ``extra=("safety",)``: the kinds above plus the safety of a text (15), drawn five times as
#: often as a plain kind.
_KINDS_SAFETY: tuple[int, ...] = (*_KINDS, 15, 15, 15, 15, 15)
_SAFETY_QUESTIONS = ("Would a moderator rate this post safe or unsafe?",
                     "Is this message safe or unsafe to share?")


def _safety_sample(rng: np.random.Generator, sid: str) -> Sample:
    """What an instruction-tuned language model knows of content moderation: a sentence
    holding an alarming word is unsafe, one holding a pleasant word or none is safe. Half the
    samples ask it in the multiple-choice format of the binary task's *text-only* prompt (on
    other sentences than the task's captions), the rest in free wording, sometimes beside an
    unrelated picture. The task's rule, which also asks for a warm picture, is not taught: on
    the binary task this knowledge reaches at most the text-only ceiling."""
    group = int(rng.integers(3))  # 0 pleasant, 1 alarming, 2 an everyday sentence
    if group == 2:
        text = _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))]
    else:
        w = BINARY_WORDS[group][int(rng.integers(len(BINARY_WORDS[group])))]
        text = _TONE_FRAMES[int(rng.integers(len(_TONE_FRAMES)))].format(w=w)
    answer = "unsafe" if group == 1 else "safe"
    im = None
    if rng.integers(2):
        names = list(COLOURS)
        bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
        im = shapes_image(rng, COLOURS[bg], COLOURS[fg], SHAPES[int(rng.integers(3))],
                          int(rng.integers(1, 4)))
    if rng.integers(2):  # a moderation question in the multiple-choice format of the binary
        # task's text-only prompt (an instruction-tuned model has seen such prompts)
        label = int(answer == "unsafe")
        return Sample(id=sid, task="pretrain", answer=mc_answer(SYNTH_BINARY_OPTIONS, label),
                      question=mc_prompt("synth_binary", text, has_image=False),
                      meta={"kind": "safety_mc", "text": text})
    question = f"{text}\n{_SAFETY_QUESTIONS[int(rng.integers(len(_SAFETY_QUESTIONS)))]}"
    if rng.integers(2):
        sample = _pretrain_choice(rng, sid, question, answer, ["safe", "unsafe"], im,
                                  kind="safety")
        sample.meta["text"] = text
        return sample
    return Sample(id=sid, task="pretrain", answer=answer, question=question, image=im,
                  meta={"kind": "safety", "text": text})


def _two_colours(rng: np.random.Generator) -> tuple[str, str]:
    """A background and a foreground colour name, distinct."""
    names = list(COLOURS)
    bg, fg = (names[int(j)] for j in rng.choice(len(names), size=2, replace=False))
    return bg, fg


def _shapes_qa(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kinds 0-2, a shapes image: its caption, its background colour or its shape."""
    bg, fg = _two_colours(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    count = int(rng.integers(1, 5))
    im = shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, count)
    plural = shape if count == 1 else shape + "s"
    if kind == 0:
        q = ("Describe the image.", "What do you see?", "Write a caption.")[int(rng.integers(3))]
        a = f"{NUMBER_WORDS[count]} {fg} {plural} on a {bg} background"
        if count == 1:
            a = f"a {fg} {shape} on a {bg} background"
    elif kind == 1:
        q, a = "Which colour is the background of this picture?", bg
    else:
        q, a = "Name the shape in the picture.", shape
    return Sample(id=sid, task="pretrain", answer=a, question=q, image=im,
                  meta={"kind": "shapes"})


def _position(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 3: where a single shape sits."""
    bg, fg = _two_colours(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    pos = list(_POSITIONS)[int(rng.integers(4))]
    im = Image.new("RGB", (SIZE, SIZE), jitter(rng, COLOURS[bg], 10))
    draw_shape(ImageDraw.Draw(im), shape, _POSITIONS[pos], fill=jitter(rng, COLOURS[fg], 10))
    return Sample(id=sid, task="pretrain", answer=pos, question=f"Where is the {shape}?",
                  image=im, meta={"kind": "position"})


def _digit(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 4: a digit in a colour, read or described."""
    names = list(COLOURS)
    bgname = names[int(rng.integers(len(names)))]
    im, digit = digit_image(rng, COLOURS[bgname])
    q = ("What is written in the image?", "Describe the image.")[int(rng.integers(2))]
    a = (str(digit) if q.startswith("What is written")
         else f"the digit {digit} on a {bgname} background")
    return Sample(id=sid, task="pretrain", answer=a, question=q, image=im,
                  meta={"kind": "digit"})


def _caption_match(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 5: does a caption describe the picture (image + text)."""
    names = list(COLOURS)
    bg, fg = _two_colours(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    im = shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, 1)
    match = bool(rng.integers(2))
    if match:
        cap_bg = bg
    else:
        cap_bg = [c for c in names if c not in (bg, fg)][int(rng.integers(len(names) - 2))]
    caption = f"caption: a {shape} on a {cap_bg} background"
    return Sample(id=sid, task="pretrain", answer="yes" if match else "no",
                  question=f"{caption}\nDoes the caption describe the picture?", image=im,
                  meta={"kind": "match", "text": caption})


def _reading(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 6: the first or last word of a text, or its word count."""
    sent = _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))]
    words = sent.split()
    which = int(rng.integers(3))
    if which == 0:
        q, a = "What is the last word of the text?", words[-1]
    elif which == 1:
        q, a = "What is the first word of the text?", words[0]
    else:
        q, a = "How many words does the text have?", str(len(words))
    return Sample(id=sid, task="pretrain", answer=a, question=f"{sent}\n{q}",
                  meta={"kind": "reading", "text": sent})


def _image_choice(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kinds 8-9: multiple choice about an image's background colour (8) or shape (9)."""
    bg, fg = _two_colours(rng)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    im = shapes_image(rng, COLOURS[bg], COLOURS[fg], shape, 1)
    if kind == 8:
        return _pretrain_choice(rng, sid, "What colour is the background?", bg, list(COLOURS),
                                im)
    return _pretrain_choice(rng, sid, "Which shape is shown?", shape, list(SHAPES), im)


def _text_choice(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 10: multiple choice about a text's first word."""
    sent = _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))]
    words = sent.split()
    pool = sorted({w for t in _TEXT_SENTENCES for w in t.split()} - set(words[1:]))
    return _pretrain_choice(rng, sid, f"{sent}\nWhich word starts the text?", words[0], pool)


def _word_knowledge(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 11: world knowledge about words (what a language model knows of them)."""
    table = (BINARY_WORDS, ("pleasant", "alarming")) if rng.integers(2) else \
        (MULTICLASS_WORDS, ("urgent", "routine"))
    words, names_ = table
    group = int(rng.integers(2))
    w = words[group][int(rng.integers(len(words[group])))]
    question = f"Is the word {w} {names_[0]} or {names_[1]}?"
    return Sample(id=sid, task="pretrain", answer=names_[group], question=question,
                  meta={"kind": "word_knowledge"})


def _colour_knowledge(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 12: the colour temperature of a background (sometimes beside an unrelated text)."""
    temp = int(rng.integers(3))  # warm, cool, or a neutral white/black background
    family = (WARM, COOL, _NEUTRAL)[temp]
    cname = list(family)[int(rng.integers(len(family)))]
    fg = ("white", "black", "blue" if cname == "white" else "yellow")[temp]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    im = shapes_image(rng, family[cname], COLOURS[fg], shape, int(rng.integers(1, 4)))
    question = "Is the background colour warm, cool or neither?"
    if rng.integers(2):  # the text is a distractor: the answer is read from the picture
        question = f"{_tone_text(rng)[0]}\n{question}"
    return Sample(id=sid, task="pretrain", answer=("warm", "cool", "neither")[temp],
                  question=question, image=im, meta={"kind": "colour_knowledge"})


def _repeat(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 13, copying: every word of the lexicon gets trained input/output embeddings."""
    lexicon = _lexicon()
    words = [lexicon[int(j)] for j in rng.choice(len(lexicon), size=int(rng.integers(2, 6)))]
    phrase = " ".join(words)
    return Sample(id=sid, task="pretrain", answer=phrase, question=f"Repeat after me: {phrase}",
                  meta={"kind": "repeat"})


def _tone(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Kind 14: the tone of a short text (sometimes beside an unrelated picture)."""
    text, answer, names_ = _tone_text(rng)
    im = None
    if rng.integers(2):  # the picture is a distractor: the answer is read from the text
        bg, fg = _two_colours(rng)
        im = shapes_image(rng, COLOURS[bg], COLOURS[fg], SHAPES[int(rng.integers(3))],
                          int(rng.integers(1, 4)))
    header = _TONE_HEADERS[int(rng.integers(len(_TONE_HEADERS)))]
    question = f"{header}{text}\nDoes the text sound {names_[0]}, {names_[1]} or neither?"
    if rng.integers(2):
        return _pretrain_choice(rng, sid, question, answer, [*names_, "neither"], im,
                                kind="tone")
    return Sample(id=sid, task="pretrain", answer=answer, question=question, image=im,
                  meta={"kind": "tone", "text": text})


def _generic_qa(rng: np.random.Generator, sid: str, kind: int) -> Sample:
    """Any other kind: a generic text question and its answer."""
    q, a = _GENERIC_QA[int(rng.integers(len(_GENERIC_QA)))]
    return Sample(id=sid, task="pretrain", answer=a, question=q, meta={"kind": "generic_qa"})


# The builder of each kind of pre-training sample (a kind not listed is a generic question).
_BUILDERS = {0: _shapes_qa, 1: _shapes_qa, 2: _shapes_qa, 3: _position, 4: _digit,
             5: _caption_match, 6: _reading, 8: _image_choice, 9: _image_choice,
             10: _text_choice, 11: _word_knowledge, 12: _colour_knowledge, 13: _repeat,
             14: _tone}


def _pretrain_sample(rng: np.random.Generator, i: int,
                     kinds: tuple[int, ...] = _KINDS) -> Sample:
    kind = kinds[int(rng.integers(len(kinds)))]
    if kind == 15:
        return _safety_sample(rng, f"pretrain-{i}")
    return _BUILDERS.get(kind, _generic_qa)(rng, f"pretrain-{i}", kind)


# Generic sentences for the tone questions (not the benchmark's captions): a word of one of
# the word groups is read in context, as a language model reads the mood of a sentence.
_TONE_FRAMES = (
    "the {w} was on the news tonight",
    "someone mentioned a {w} at lunch",
    "this note is about the {w}",
    "we read about the {w} in the paper",
    "everyone in town talked about the {w}",
    "a short post on the {w} appeared",
)
_TONE_HEADERS = ("", "Read the text.\n", "Here is a message.\n")
# Backgrounds that are neither warm nor cool (the colour-temperature question's third answer).
_NEUTRAL = {"white": COLOURS["white"], "black": COLOURS["black"]}


def _tone_text(rng: np.random.Generator) -> tuple[str, str, tuple[str, str]]:
    """A generic sentence and its tone: ``(text, tone, (tone_0, tone_1))``.

    Two times in three the sentence holds a word of known tone from the word groups of the
    word-knowledge questions (pleasant/alarming, urgent/routine) in one of
    :data:`_TONE_FRAMES`; otherwise it is an everyday sentence with no such word, whose
    tone is ``"neither"``. The sentences are not the benchmark's captions.
    """
    words, names_ = ((BINARY_WORDS, ("pleasant", "alarming")) if rng.integers(2) else
                     (MULTICLASS_WORDS, ("urgent", "routine")))
    group = int(rng.integers(3))
    if group == 2:
        return _TEXT_SENTENCES[int(rng.integers(len(_TEXT_SENTENCES)))], "neither", names_
    w = words[group][int(rng.integers(len(words[group])))]
    frame = _TONE_FRAMES[int(rng.integers(len(_TONE_FRAMES)))]
    return frame.format(w=w), names_[group], names_


_LEXICON: tuple[str, ...] | None = None


def _lexicon() -> tuple[str, ...]:
    """Every word the tokenizer corpus uses in instructions, options and captions.

    A language model has seen its whole vocabulary in pre-training; copying random words
    gives the tiny base the same property (no untrained output embeddings), without any
    of the benchmark's label rules.
    """
    global _LEXICON
    if _LEXICON is None:
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


def make_pretrain_corpus(n: int, seed: int, extra: tuple[str, ...] = ()) -> list[Sample]:
    """A generic multimodal corpus for the tiny base model's centralized pre-training.

    Captions and colour/shape/position/digit questions about generated images, caption-image
    agreement (image + text), reading questions about a short text, and generic text-only QA.
    Deliberately *not* the benchmark tasks: no options, different wording and concepts.
    Samples have ``task = "pretrain"`` and ``text = None``: a sample's ``question`` is its whole
    user prompt (a caption or sentence to read is its first line, also kept in ``meta["text"]``),
    so ``s.question`` and ``build_prompt(s)`` are the same string.

    ``extra``: ``("safety",)`` adds what a language model knows of content moderation
    (:func:`_safety_sample`), for the ``tiny-structured`` base; the default corpus is unchanged.
    """
    unknown = set(extra) - {"safety"}
    if unknown:
        raise ValueError(f"unknown pre-training corpus extra {sorted(unknown)}")
    kinds = _KINDS_SAFETY if "safety" in extra else _KINDS
    rng = numpy_rng(seed, 7)
    return [_pretrain_sample(rng, i, kinds) for i in range(n)]


def corpus_text(n: int, seed: int) -> list[str]:
    """Plain strings for training the byte-level BPE tokenizer.

    Contains the prompts and answers of ``n`` pre-training samples and ``n`` samples of each
    synth task (under every modality case and both prompt strategies), all option names, and
    the multiple-choice template wording of every task (Hateful-Memes and CrisisMMD included).
    """
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
