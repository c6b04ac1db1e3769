"""Parsing a generated multiple-choice answer into an option index.

Two parsers, clearly separated:

* :func:`parse_option` — the strict parser used by ``fedmllm``. It reads the option *in the
  answer position only* (the start of the answer, after an optional ``Answer:`` /
  ``The best answer is`` lead-in) and returns ``None`` — *invalid* — for anything else. An
  invalid answer is counted and reported by the metrics, never turned into a class.
* :func:`research_parse` — a faithful copy of the research code's ``meld_dump``, kept only so
  that published numbers can be reproduced. It takes the first capital letter ``A``–``G``
  (``A``–``H`` for eight options) found *anywhere* in the text (so the "B" of "Based on ..."
  reads as option B) and maps every failure to index 2 (a real class for CrisisMMD).

Accepted by :func:`parse_option` (``options = ["not-hateful", "hateful"]``)::

    "B"  "(B)"  "B)"  "B."  "B:"  "B) hateful"  "(B) hateful"  "B hateful"  "B\\nbecause ..."
    "Answer: B"  "The best answer is: (B) hateful."  "**B**"  "Option B"
    "hateful"  "Hateful."  "not hateful"  "not-hateful"  "hateful meme"

Rejected (``None``)::

    "Based on the image, B"   (a capital that starts a word is not an answer letter)
    "A meme showing ..."      (a bare letter followed by a word that is not its option)
    "C"                       (beyond the number of options)
    "B) not-hateful"          (letter and option text contradict each other)
    "I think B"  ""  "hatefulness"
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["LETTERS", "RESEARCH_FAILURE_INDEX", "option_letters", "parse_option", "research_parse"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
"""Option letters, in order: option ``i`` is ``LETTERS[i]``."""

RESEARCH_FAILURE_INDEX = 2
"""The index the research code's ``meld_dump`` returns when it cannot parse an answer."""

# Lead-ins a model may put before the answer: "Answer:", "The best answer is:", "Final answer -".
_ANSWER_PREFIX = re.compile(
    r"^(?:the\s+)?(?:(?:best|correct|final|right)\s+)?answer(?:\s+is)?\s*[:\-]?\s*",
    re.IGNORECASE,
)
# "Option B" / "option (B)": the word "option" directly before a letter form.
_OPTION_PREFIX = re.compile(r"^(?i:option)\s*[:\-]?\s*(?=\(?[A-Z](?![A-Za-z]))")
# "(B)" — parentheses delimit the letter; anything may follow.
_PAREN_LETTER = re.compile(r"^\(([A-Z])\)")
# "B)" — a closing parenthesis delimits the letter; anything may follow.
_CLOSE_LETTER = re.compile(r"^([A-Z])\)")
# "B." / "B:" — must be followed by whitespace or the end ("B.Sc" is not an answer).
_DOT_LETTER = re.compile(r"^([A-Z])[.:](?=\s|$)")
# "B" alone, or "B" ending its line.
_BARE_LETTER = re.compile(r"^([A-Z])[ \t]*(?=\n|$)")
# "B hateful" — accepted only when the words are the letter's own option text.
_SPACED_LETTER = re.compile(r"^([A-Z])[ \t]+(?=\S)")

# Characters that may follow an option text matched as a prefix of the answer.
_TEXT_BOUNDARY = frozenset(" .,;:!?)\n")
_SEPARATORS = re.compile(r"[\s_\-]+")


def option_letters(num_options: int) -> str:
    """The letters ``A, B, ...`` of ``num_options`` options (1 to 26)."""
    if not 1 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be in 1..{len(LETTERS)}, got {num_options}")
    return LETTERS[:num_options]


def _norm_text(s: str) -> str:
    """Case-fold and treat ``-``, ``_`` and whitespace runs alike ("not-hateful" =
    "not hateful")."""
    return _SEPARATORS.sub(" ", s.casefold()).strip()


def _strip_lead_in(text: str) -> str:
    s = text.replace("*", "").replace("`", "").strip()
    s = _ANSWER_PREFIX.sub("", s, count=1)
    s = _OPTION_PREFIX.sub("", s, count=1)
    return s.strip().strip("\"'").strip()


def _match_option_text(text: str, norm_options: Sequence[str]) -> int | None:
    """Index of the option whose text *is* ``text`` or starts it at a word boundary.

    An exact match wins. Otherwise the longest option text that is followed in ``text`` by a
    boundary character (space, punctuation or the end — not a hyphen, so "not-hateful" never
    matches the option "not") is taken.
    """
    t = _norm_text(text).strip("\"'")
    t_exact = t.rstrip(".!").strip()
    for i, opt in enumerate(norm_options):
        if t_exact == opt:
            return i
    best: int | None = None
    for i, opt in enumerate(norm_options):
        at_boundary = t.startswith(opt) and len(t) > len(opt) and t[len(opt)] in _TEXT_BOUNDARY
        if opt and at_boundary and (best is None or len(opt) > len(norm_options[best])):
            best = i
    return best


def parse_option(text: str, options: Sequence[str]) -> int | None:
    """Parse a generated answer strictly; the option index, or ``None`` when invalid.

    The answer must *begin* (after whitespace, markdown ``*``/backticks, an optional lead-in such
    as ``Answer:``, ``The best answer is:`` or ``Option``) with one of:

    * an uppercase option letter in a delimited form — ``B``, ``(B)``, ``B)``, ``B.``, ``B:`` —
      optionally followed by more text; if that text names a *different* option the answer
      contradicts itself and is invalid;
    * a bare letter followed by a space and text (``B hateful``) only when the text is that
      letter's own option (so "A meme ..." and "Based on ..." are invalid);
    * the option text itself, case-insensitive, ``-``/``_``/spaces treated alike; an exact match
      wins, otherwise the longest option text that starts the answer at a word boundary.

    Letters beyond ``len(options)`` are invalid. Lower-case letters are not read as option
    letters (``a`` is an article). Never guesses: anything else returns ``None``.
    """
    letters = option_letters(len(options))
    norm_options = [_norm_text(o) for o in options]
    if len(set(norm_options)) != len(norm_options):
        raise ValueError(f"options are not distinct after normalisation: {list(options)}")

    s = _strip_lead_in(text)
    if not s:
        return None

    letter: str | None = None
    rest = ""
    for pattern in (_PAREN_LETTER, _CLOSE_LETTER, _DOT_LETTER, _BARE_LETTER):
        m = pattern.match(s)
        if m:
            letter, rest = m.group(1), s[m.end() :]
            break
    if letter is None:
        m = _SPACED_LETTER.match(s)
        if m:
            idx = letters.find(m.group(1))
            if idx >= 0 and _match_option_text(s[m.end() :], norm_options) == idx:
                return idx
        # "A meme ..." is not a letter answer, but the whole text may still be an option text.
        return _match_option_text(s, norm_options)

    idx = letters.find(letter)
    if idx < 0:
        return None  # a letter beyond the options
    rest = rest.strip(" \t\n.:-)")
    if rest:
        other = _match_option_text(rest, norm_options)
        if other is not None and other != idx:
            return None  # "B) not-hateful": letter and text disagree
    return idx


def research_parse(text: str, num_options: int) -> int:
    """The research code's ``meld_dump``, reproduced exactly (compatibility only).

    Steps: delete the substrings ``answer`` and ``Answer``; ``re.findall`` the pattern
    ``[\\(\\ ]*[A-G][\\)\\ ]*`` (two-option tasks; ``[A-H]`` for eight options); take the first
    match, ``.strip()`` then ``.strip('()')``; its index among the option letters. No match, or a
    letter that is not an option, gives :data:`RESEARCH_FAILURE_INDEX` (2) — a real class for
    eight-option CrisisMMD and a score above "hateful" in the Hateful-Memes "AUC".

    Quirks kept on purpose: the first capital anywhere counts ("Based on ..." → 1); ``"( B )"``
    strips to ``" B "`` and fails (→ 2). For option counts the research code never used, the
    letter class is ``A-G`` up to seven options and ``A-<last letter>`` above.
    """
    letters = list(option_letters(num_options))
    last = "G" if num_options <= 7 else LETTERS[num_options - 1]
    out = text.replace("answer", "").replace("Answer", "")
    found = re.findall(rf"[\(\ ]*[A-{last}][\)\ ]*", out)
    if not found:
        return RESEARCH_FAILURE_INDEX
    pred = found[0].strip().strip("()")
    return letters.index(pred) if pred in letters else RESEARCH_FAILURE_INDEX
