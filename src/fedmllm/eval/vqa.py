"""Medical VQA scoring: the standard VQA answer normalisation, exact match and token recall.

:func:`normalize_answer` is the research code's ``preprocess_answer`` (itself the official VQA
evaluation's ``processPunctuation`` + ``processDigitArticle``), applied to both the prediction and
the ground truth before comparing them:

1. punctuation — for each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: deleted if it occurs
   next to a space in the *original* text, or if the text contains a digit,digit pattern
   (``1,000``); otherwise replaced by a space (``x-ray`` → ``x ray``). Then every period not
   followed by a digit is removed (the official regex ``(?!<=\\d)(\\.)(?!\\d)`` misspells its
   look-behind, so in effect it is ``\\.(?!\\d)``; we reproduce the effect: ``0.5`` keeps its
   period, ``end.`` loses it);
2. lower-case, split on whitespace; number words ``none``/``zero``..``ten`` → digits; articles
   ``a an the`` dropped; contractions written without an apostrophe restored (``dont`` →
   ``don't``, the official table with its capitalised keys lower-cased);
3. join with single spaces, remove commas, ``x ray`` → ``xray`` (as a word pair), strip.

Scores (all fractions in ``[0, 1]``):

* exact match: normalised strings equal (no multi-annotator soft score, as the research code);
* token recall (LLaVA-Med convention for open questions): the fraction of the distinct
  ground-truth tokens that appear among the prediction's tokens.

:func:`vqa_metrics` aggregates them: ``closed_accuracy`` (exact match on CLOSED questions),
``open_exact`` and ``open_recall`` (OPEN questions), ``overall`` (exact match on all), counts and
per-answer-type / per-question-type tables. A :class:`Judge` (e.g. an LLM grader) can be passed
to add judge scores; none is built in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Judge",
    "answer_kind",
    "exact_match",
    "normalize_answer",
    "token_recall",
    "vqa_metrics",
]

_PUNCT = tuple(';/[]"{}()=+\\_-><@`,?!')
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP = re.compile(r"\.(?!\d)")
_XRAY = re.compile(r"\bx ray\b")
# fmt: off
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
# The official VQA evaluation's table (keys lower-cased so they can match lower-cased words; its
# one inverted entry "somebody'd" -> "somebodyd" left out).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "id've": "i'd've", "i'dve": "i'd've", "im": "i'm",
    "ive": "i've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}
# fmt: on


def _process_punctuation(text: str) -> str:
    out = text
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for p in _PUNCT:
        if (p + " " in text or " " + p in text) or digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out)


def _process_digit_article(text: str) -> str:
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES]
    return " ".join(words)


def normalize_answer(s: Any) -> str:
    """The standard VQA normalisation of an answer (see the module docstring for each step).

    >>> normalize_answer("The X-ray shows TWO nodules.")
    'xray shows 2 nodules'
    """
    text = _process_punctuation(str(s))
    text = _process_digit_article(text)
    text = text.replace(",", "")
    text = _XRAY.sub("xray", text)
    return " ".join(text.split())


def exact_match(prediction: Any, answer: Any) -> bool:
    """Whether the normalised prediction equals the normalised answer."""
    return normalize_answer(prediction) == normalize_answer(answer)


def token_recall(prediction: Any, answer: Any) -> float:
    """Fraction of the distinct ground-truth tokens present in the prediction (normalised).

    The LLaVA-Med "recall" for open questions: ``|T(answer) ∩ T(prediction)| / |T(answer)|`` with
    ``T`` the set of whitespace tokens of the normalised string. An answer that normalises to
    nothing scores 1.0 if the prediction does too, else 0.0 (consistent with exact match).
    """
    truth = set(normalize_answer(answer).split())
    pred = set(normalize_answer(prediction).split())
    if not truth:
        return 1.0 if not pred else 0.0
    return len(truth & pred) / len(truth)


@runtime_checkable
class Judge(Protocol):
    """Extension point for a model-based grader (e.g. the papers' GPT-4 judge).

    ``score`` returns a correctness score in ``[0, 1]`` for one question (1 = the prediction
    matches the answer or is good enough). :func:`vqa_metrics` averages it per question group
    under the key ``judge``. No implementation ships with fedmllm.
    """

    def score(self, question: str, prediction: str, answer: str) -> float: ...


def _get(record: Any, key: str, default: Any = None) -> Any:
    if isinstance(record, Mapping):
        return record.get(key, default)
    return getattr(record, key, default)


def answer_kind(answer_type: str | None, answer: Any) -> str:
    """``"CLOSED"`` or ``"OPEN"`` for one question.

    ``answer_type`` ``OPEN`` → open; ``CLOSED``/``CLOSE`` → closed (case and surrounding spaces
    ignored). Missing or any other value: closed when the answer normalises to ``yes``/``no``,
    else open.
    """
    kind = (answer_type or "").strip().upper()
    if kind == "OPEN":
        return "OPEN"
    if kind in ("CLOSED", "CLOSE"):
        return "CLOSED"
    return "CLOSED" if normalize_answer(answer) in ("yes", "no") else "OPEN"


class _Group:
    """Running sums of one table row."""

    def __init__(self) -> None:
        self.n = 0
        self.exact = 0.0
        self.recall = 0.0
        self.judge = 0.0

    def add(self, exact: float, recall: float, judge: float) -> None:
        self.n += 1
        self.exact += exact
        self.recall += recall
        self.judge += judge

    def mean(self, attr: str) -> float | None:
        return getattr(self, attr) / self.n if self.n else None

    def row(self, with_judge: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "exact": self.mean("exact"),
            "recall": self.mean("recall"),
        }
        if with_judge:
            out["judge"] = self.mean("judge")
        return out


def vqa_metrics(records: Iterable[Any], judge: Judge | None = None) -> dict[str, Any]:
    """Aggregate VQA scores over ``records``.

    Each record is a mapping (or an object with attributes) with ``prediction`` and ``answer``,
    optional ``answer_type`` (``CLOSED``/``OPEN``; ``None`` → inferred, see :func:`answer_kind`),
    optional ``question_type`` (falling back to ``content_type``, SLAKE's name for it) and, for a
    judge, ``question``.

    Returns ``n``, ``n_closed``, ``n_open``; ``closed_accuracy`` (exact match on closed
    questions), ``open_exact``, ``open_recall`` (open questions), ``overall`` (exact match on
    all); ``per_answer_type`` (``CLOSED``/``OPEN`` → ``{n, exact, recall}``) and
    ``per_question_type`` (question type → ``{n, exact, recall}``; records without a type are
    left out of that table). A rate over an empty group is ``None``. With a ``judge``, also
    ``judge_overall``, ``judge_closed``, ``judge_open`` and a ``judge`` column in both tables.
    """
    total, closed, opened = _Group(), _Group(), _Group()
    by_qtype: dict[str, _Group] = {}
    for rec in records:
        prediction = "" if _get(rec, "prediction") is None else str(_get(rec, "prediction"))
        answer = _get(rec, "answer")
        if answer is None:
            raise ValueError(f"VQA record without an answer: {rec!r}")
        answer = str(answer)
        exact = float(exact_match(prediction, answer))
        recall = token_recall(prediction, answer)
        judged = 0.0
        if judge is not None:
            judged = float(judge.score(str(_get(rec, "question") or ""), prediction, answer))
        kind = answer_kind(_get(rec, "answer_type"), answer)
        total.add(exact, recall, judged)
        (closed if kind == "CLOSED" else opened).add(exact, recall, judged)
        qtype = _get(rec, "question_type")
        if qtype is None:
            qtype = _get(rec, "content_type")
        if qtype is not None and str(qtype).strip():
            by_qtype.setdefault(str(qtype).strip(), _Group()).add(exact, recall, judged)

    with_judge = judge is not None
    out: dict[str, Any] = {
        "n": total.n,
        "n_closed": closed.n,
        "n_open": opened.n,
        "closed_accuracy": closed.mean("exact"),
        "open_exact": opened.mean("exact"),
        "open_recall": opened.mean("recall"),
        "overall": total.mean("exact"),
        "per_answer_type": {
            kind: group.row(with_judge)
            for kind, group in (("CLOSED", closed), ("OPEN", opened))
            if group.n
        },
        "per_question_type": {k: g.row(with_judge) for k, g in sorted(by_qtype.items())},
    }
    if with_judge:
        out.update(
            judge_overall=total.mean("judge"),
            judge_closed=closed.mean("judge"),
            judge_open=opened.mean("judge"),
        )
    return out
