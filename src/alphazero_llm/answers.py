"""Extract, normalise and compare the numeric final answers of GSM8K-style completions.

A completion often holds many numbers; only one is its *committed* answer. `extract` looks for
the strongest commitment marker present and stops at the first rule that fires. A completion
that goes on to a new line starting "Question:" is first cut there, as lm-eval's GSM8K stop
sequence does: what follows is a problem the model made up, with its own answer.

1. ``strict``   the last ``#### N`` line (GSM8K's own format). A ``####`` that is a markdown
                heading (``#### Step 2``, ``#### 3. Costs``) is not a marker.
2. ``boxed``    the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed). A box is a
                commitment even when it holds no number: then the answer is unparseable.
3. ``phrase``   the last "final answer" / "the answer is" / "Answer:" / line-initial "A:" that
                is followed by a number: the number right after it (through ``**``, ``$``,
                ``\\(``); failing that, the first number of the rest of its sentence, but only
                after "final answer" or when no later sentence holds a number (so "Answer: Janet
                has 16 eggs..." at the top of a worked solution does not commit to 16); a number
                that sentence puts in bold wins over its first number ("Final Answer: After 36
                months, the bag costs **$92**" gives 92, not the restated 36).
4. ``bold``     the last ``**...**`` with a number in the concluding paragraph, unless an ``=``
                follows it (the work went on); ``sentence``: in the concluding sentence (the
                last one with a number), the value after its last ``=``, or else the number
                before a clause that explains it ("33 bananas because there is 1 in each").
   A bold that starts a line after the last ``=`` is a headline answer even when prose follows
   in a later paragraph ("**12 years**" then "from year 13 on it is pure profit" gives 12).
   A bold after the last ``=`` that states that ``=``'s result is the answer when everything after
   it only restates numbers of the text before it, a recap ("= $694 ... So she spent **$694**."
   then "That's $204 on donuts, $160 on cupcakes and $330 on cheesecakes." gives 694); a new
   number after it may be a last step worked in prose, so then the rules go on.
   A concluding sentence without ``=`` that ends by restating a given ("Claire will eat 7 dozen
   eggs in 4 weeks": 4 occurs earlier and never follows an ``=``) gives its last number that
   the work computed after an ``=`` (7); with no such number the rules go on.
5. ``last_number`` the last number in the text.
   ``none``     no number at all.

Rules 3-5 read the text without a closing *tail*: a line starting with a check ("Check:",
"### Verification", "Let's verify", "Double-check", "Working backwards", or one of these after
"quick", "brief", "short" or "final": "### Quick check") or a hedge ("Note:", "If you meant",
"If I misinterpreted", "Alternatively", "Assumption") after which the text has no heading,
step, bold line of its own, "Answer"/"Therefore"/"Then"... line, "final answer" or revision
("Wait", "Actually", "mistake"). A hedge's own paragraph must hold no ``=`` (else it is work).
So the answer stated before a verification or a disclaimer wins, and a hedge that offers a
second answer ("**230 miles** ... Note: if you meant the straight-line distance, it is **170
miles**") is graded on the first (230): the alternative never counts, so hedging cannot turn a
wrong answer right. A ``####`` line or box in the tail still counts (rules 1-2 read everything).

Mixed units: when rules 3-5 land on either number of "H hours (and) M minutes" (or minutes and
seconds) and the work computed H*60+M or H+M/60 after an ``=`` earlier, that value is the answer
("= 160 minutes ... It takes 2 hours and 40 minutes" gives 160); otherwise the number stays.

Within a marker the number right after it wins, so "The answer is 18 because 9*2=18" gives 18;
a worked calculation right after a marker gives its result ("#### 3*6 = 18" gives 18).
Enumeration labels ("Step 2:", "Part 3", a "1. " list item) are never answers.

Number conventions (`parse_number`):

- ``,`` is a thousands separator only in groups of three (``1,000``, ``1,000,000.5``); ``1,5``,
  ``(1,5)`` or ``1,00,000`` are not numbers at all, because guessing between a list, a decimal
  comma and a typo would score some answers wrongly. ``.`` is always the decimal point.
- Thin, narrow and non-breaking spaces, LaTeX ``\\,`` and ``{,}`` also separate thousands; a
  plain space does so only when the whole string is such a number (``"1 000"``) or right after a
  currency sign (``$409 500``, the style of questions that write "$400 000"), since in prose
  "3 000" can be two numbers.
- ``$``, ``\\$``, ``£``, ``€``, ``%`` (50% is 50: GSM8K golds are bare numbers), trailing units
  and words, trailing periods and ``18.00`` all reduce to the bare value.
- Minus signs: ``-``, ``−`` (U+2212) and ``–`` (U+2013), glued to the number; a "- 3" with a space
  is a markdown bullet. "N below zero" (``3°C below zero``, ``10 degrees below zero``) is -N.
- ``a/b``, ``\\frac{a}{b}``, ``\\dfrac``, ``\\tfrac``, ``\\frac12`` and mixed ``1\\frac{1}{2}`` are exact
  fractions; ``1e3`` is 1000.
- ``x = 18`` is 18 (the right-hand side); an unevaluated ``3 \\times 6`` is not a number.

Values are `fractions.Fraction`, so comparisons are exact before the tolerance applies.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from fractions import Fraction

logger = logging.getLogger(__name__)

__all__ = [
    "Extraction",
    "Marker",
    "answers_match",
    "committed_marker",
    "extract",
    "extract_answer",
    "extract_strict",
    "parse_number",
]

# --- LaTeX and typography -> plain text ---------------------------------------------------------

_THIN_SPACES = "\u00a0\u2009\u202f"
_DASHES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2012": "-", "\ufe63": "-", "\uff0d": "-"})
# GSM8K's calculator annotations `<<9*2=18>>` repeat the arithmetic and would split "= $18".
_CALC_ANNOTATION = re.compile(r"<<[^<>\n]*>>")
_LATEX_SIMPLE = [
    (re.compile(r"\\([$%])"), r"\1"),
    (re.compile(r"\\(?:left|right)(?![a-zA-Z])"), ""),
    (re.compile(r"\\times(?![a-zA-Z])"), "×"),
    (re.compile(r"\\c?dot(?![a-zA-Z])"), "·"),
    (re.compile(r"\\div(?![a-zA-Z])"), "÷"),
    (re.compile(r"\\!"), ""),
    # LaTeX spaces become thin spaces, which separate thousands (`1\,000`) and nothing else.
    (re.compile(r"\\[,;: ]"), "\u2009"),
    (re.compile(r"\{,\}"), ","),
    (re.compile(r"\\[dt]frac(?![a-zA-Z])"), r"\\frac"),
]
# "3°C below zero", "10 degrees below zero": a negative number written in words.
_BELOW_ZERO = re.compile(
    r"(?<![\w.,-])(\d+(?:\.\d+)?)([ \t]*(?:°|º|degrees?)?[ \t]*(?:[CF]\b|celsius\b|fahrenheit\b)?)"
    r"[ \t]+below[ \t]+zero\b",
    re.IGNORECASE,
)
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_FRAC_ARG = r"(?:\{\s*(-?\d+(?:\.\d+)?)\s*\}|(\d))"
_FRAC = re.compile(rf"(?:(?<![\w.^])(\d+)\s*)?\\frac\s*{_FRAC_ARG}\s*{_FRAC_ARG}")


def _frac_to_text(m: re.Match[str]) -> str:
    whole, num, den = m[1], m[2] or m[3], m[4] or m[5]
    negative = num.startswith("-") != den.startswith("-")
    num, den = num.lstrip("-"), den.lstrip("-")
    if whole is not None:  # mixed number 1\frac{1}{2}: write it as the improper fraction 3/2
        if Fraction(den) == 0:
            return m[0]
        value = int(whole) + Fraction(num) / Fraction(den)
        num, den = str(value.numerator), str(value.denominator)
    text = f"{'-' if negative else ''}{num}/{den}"
    # Keep `x^2\frac{1}{2}` from gluing into "21/2".
    return " " + text if m.start() > 0 and m.string[m.start() - 1].isdigit() else text


def strip_calculator_annotations(text: str) -> str:
    """`text` without GSM8K's calculator annotations: "8x3=<<8*3=24>>24" becomes "8x3=24"."""
    return _CALC_ANNOTATION.sub("", text)


def _normalise(text: str) -> str:
    """Plain-text form of `text`: no calculator annotations, LaTeX number markup or odd dashes."""
    text = strip_calculator_annotations(text).translate(_DASHES)
    if "below zero" in text.lower():  # "3°C below zero" is -3°C
        text = _BELOW_ZERO.sub(r"-\1\2", text)
    if "\\" in text or "{," in text:
        for pattern, replacement in _LATEX_SIMPLE:
            text = pattern.sub(replacement, text)
        for _ in range(2):  # \text{\textbf{18}}
            text = _TEXT_COMMAND.sub(r"\1", text)
        text = _FRAC.sub(_frac_to_text, text)
    return text


# --- numbers in text ------------------------------------------------------------------------------

_NUMBER = re.compile(
    rf"""
    (?<![\w.,/^])                      # starts a word: not inside 3.14, 12/25, x2 or 10^3
    (?P<sign>-)?
    (?:(?P<currency>[$£€])\s?)?
    (?P<sign2>-)?
    (?P<body>                          # at most 60 digits: a longer run is noise, not an answer
        (?(currency)\d{{1,3}}(?:\ \d{{3}}(?!\d)){{1,19}}(?:\.\d{{1,60}})?|(?!))  # $9 500: after a currency sign only
      | \d{{1,3}}(?:,\d{{3}}){{1,19}}(?:\.\d{{1,60}})?                 # 1,000  1,000.50
      | \d{{1,3}}(?:[{_THIN_SPACES}]\d{{3}}){{1,19}}(?:\.\d{{1,60}})?  # 1 000 (thin or no-break spaces)
      | \d{{1,60}}(?:\.\d{{1,60}})?(?:[eE][-+]?\d{{1,2}})?           # 18  18.00  1e3
      | \.\d{{1,60}}                                               # .5
    )
    (?:/(?P<den>\d{{1,60}}(?:\.\d{{1,60}})?))?
    (?!\d|[.,/{_THIN_SPACES}]\d)       # 1,5  1.2.3  12/25/2020: not numbers, not even in part
    """,
    re.VERBOSE,
)
# "Step 2", "Part 3", "#3": the number names a part of the text, it is not a quantity.
_LABEL_BEFORE = re.compile(
    r"(?:\b(?:step|part|question|problem|stage|phase|q)\s*#?|#)\s*$",
    re.IGNORECASE,
)
_LABEL_WINDOW = 24
_LABEL_AFTER = re.compile(r":(?:\s|$)")
_LIST_ITEM_AFTER = re.compile(r"[.)][ \t]+\S")
_LINE_PREFIX = re.compile(r"[ \t#*>_-]*")
_SPACED_THOUSANDS = re.compile(r"-?[$£€]?\s?\d{1,3}(?: \d{3})+(?:\.\d+)?%?")
_VALUE_CHANGING_LATEX = re.compile(r"\\(?:frac|sqrt|binom|log|ln|exp|sin|cos|tan|pi)(?![a-zA-Z])")
_TRAILING_OPERAND = re.compile(r"\s*[-+*/×÷·^xX]\s*[-$£€(]?\s*\d")


def _value(m: re.Match[str]) -> Fraction | None:
    body = m["body"].replace(",", "").replace(" ", "")
    for space in _THIN_SPACES:
        body = body.replace(space, "")
    value = Fraction(int(body)) if body.isdigit() else Fraction(body)  # int: the common, fast case
    if m["den"] is not None:
        den = Fraction(m["den"])
        if den == 0:
            return None
        value /= den
    return -value if (m["sign"] or m["sign2"]) else value


def _is_label(text: str, m: re.Match[str]) -> bool:
    # Only the last few characters before a number can make it a label; a bounded window keeps
    # the scan of a long line linear.
    window_start = max(0, m.start() - _LABEL_WINDOW)
    newline = text.rfind("\n", window_start, m.start())
    before = text[max(newline + 1, window_start) : m.start()]
    if _LABEL_BEFORE.search(before) or _LABEL_AFTER.match(text, m.end()):
        return True
    # "1. Janet has 16 eggs": a list item's number.
    at_line_start = newline >= 0 or window_start == 0
    return bool(at_line_start and _LINE_PREFIX.fullmatch(before) and _LIST_ITEM_AFTER.match(text, m.end()))


def _numbers(text: str, start: int = 0, end: int | None = None) -> list[re.Match[str]]:
    """The non-label numbers of text[start:end]."""
    end = len(text) if end is None else end
    return [m for m in _NUMBER.finditer(text, start, end) if not _is_label(text, m)]


# --- worked calculations -------------------------------------------------------------------------

_OPERATOR_GAP = re.compile(r"[\s()]*[-+*/×÷·xX][\s()]*")
_EQUALS_GAP = re.compile(r"[\s()]*=[\s()]*")


def _resolve_calculation(text: str, first: re.Match[str], end: int) -> re.Match[str]:
    """The result of `a op b = c` when `first` starts such a calculation, else `first`.

    The committed value of "3 * 6 = 18" is 18; of "18 = 9 * 2" it stays 18 (the right side is
    an expression, not a result).
    """
    result, result_is_bare, previous = first, False, first
    for token in _NUMBER.finditer(text, first.end(), end):
        gap = text[previous.end() : token.start()]
        if _EQUALS_GAP.fullmatch(gap):
            result, result_is_bare = token, True
        elif _OPERATOR_GAP.fullmatch(gap) or (not gap.strip() and token["sign"]):
            result_is_bare = False  # "= 9 * 2": the right side goes on
        else:
            break
        previous = token
    return result if result_is_bare else first


# --- the extraction rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    """The committed answer of a completion and the rule that found it.

    `raw` is the answer's text (LaTeX already turned into plain text, except for a box's content,
    which is verbatim); `value` is `parse_number(raw)`; `method` one of "strict", "boxed",
    "phrase", "bold", "sentence", "last_number", "none".
    """

    raw: str | None
    value: Fraction | None
    method: str


_NO_ANSWER = Extraction(None, None, "none")
# What may sit between a marker and its number: spaces, markdown, math delimiters, `:` or `=`.
_DECOR = re.compile(r"(?:[\s*_:=({\[~]|\\[(\[])*")
_HASH_MARKER = re.compile(r"####")
_HEADING_AFTER = re.compile(r"[.):][ \t]+[A-Za-z]")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_PHRASE = re.compile(
    r"""
    (?: (?P<final>\bfinal[\s*_]+answer\b)
      | \banswer\b(?:[ \t]+(?:to|for)\b[^.\n]{0,60}?)?[\s*_]*
          (?:is|was|would\s+be|will\s+be|should\s+be|equals|=|:)(?![a-z])
      | ^[ \t>*_]*(?-i:A)[*_]*:               # "A:" only upper case at a line start (few-shot Q/A)
    )
    (?:[\s*_:=]|\b(?:is|was|would\s+be|will\s+be|equals)\b)*   # "is: ", "**: "
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
_MAX_SENTENCE = 400
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)|\n")
_SENTENCE_BREAK = re.compile(r"[.!?]\s|\n")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_REASON = re.compile(r"\b(?:because|since|as|which|given|if|so that|when)\b", re.IGNORECASE)
_NEXT_QUESTION = re.compile(r"\n[ \t]*Question:")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
# A section after the answer that checks it or hedges it, starting a line (rule "tail" below).
_TAIL_LINE = re.compile(
    r"""
    ^[ \t#*>_-]*\(?[ \t*_]*
    (?: (?P<check>(?:let(?:'s|’s|[ \t]+(?:me|us))[ \t]+)?(?:(?:a[ \t]+)?(?:quick|brief|short|final)[ \t]+)?
            (?:double[- ]?check|verify|verification|sanity[- ]check|check(?:ing)?|working[ \t]+backwards?
              |work[ \t]+backwards?|proof)\b)
      | (?:note\b|n\.b\.|caveat\b|disclaimer\b|assumptions?\b|alternatively\b|however,?[ \t]+if\b
          |if[ \t]+(?:instead\b|(?:you|i)[ \t]+(?:meant|mean|misread|misinterpreted|misunderstood|interpret|read)\b
            |the[ \t]+(?:question|problem)[ \t]+(?:means|meant|asks|intended)\b))
    )
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
# What in a tail shows that the solution goes on: a heading, a step, an answer line, a revision.
_TAIL_BLOCKER_LINE = re.compile(
    r"""
    [ \t>*_-]*(?:\#{1,6}[ \t] | step[ \t]*\d | answer\b | final\b | therefore\b | thus\b | hence\b
               | in[ \t]+(?:total|conclusion)\b | then\b | next\b | now\b | finally\b)
    | [ \t>_-]*\*\*[^*\n]+\*\*[ \t:.]*$                     # a bold line of its own: a heading
    """,
    re.IGNORECASE | re.VERBOSE,
)
_REVISION = re.compile(
    r"\bfinal[\s*_]+answer\b|\b(?:wait|actually|correction|mistake|let[ \t]+me[ \t]+(?:redo|recalculate|fix))\b",
    re.IGNORECASE,
)
# "2 hours and 40 minutes": one quantity in two units (rule "mixed units" below).
_MIXED_UNITS = re.compile(
    r"""
    (?<![\w.])(?P<big>\d+)[ \t]*(?P<unit>hours?|hrs?|minutes?|mins?)\b[ \t,]*(?:and[ \t]+)?
    (?P<small>\d+)[ \t]*(?:minutes?|mins?|seconds?|secs?)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)
_EQUALS_BEFORE = re.compile(r"=[\s(*_~]*$")
_HEADLINE_BOLD = re.compile(r"^[ \t>_-]*\*\*([^*\n]+)\*\*", re.MULTILINE)


def _own_answer(text: str) -> str:
    """`text` up to a made-up next question (a restated question at the very start is kept)."""
    first_line_end = text.find("\n", len(text) - len(text.lstrip()))
    m = _NEXT_QUESTION.search(text, first_line_end) if first_line_end >= 0 else None
    return text if m is None else text[: m.start()]


def _found(text: str, m: re.Match[str], method: str) -> Extraction:
    return Extraction(m[0].strip(), _value(m), method)


def _sentence_end(text: str, pos: int) -> int:
    # Bounded, so that a text of many unfinished sentences is not scanned once per marker.
    end = min(len(text), pos + _MAX_SENTENCE)
    m = _SENTENCE_END.search(text, pos, end)
    return m.start() if m else end


def _first_number(text: str, start: int, end: int) -> re.Match[str] | None:
    return next((m for m in _NUMBER.finditer(text, start, end) if not _is_label(text, m)), None)


@dataclass(frozen=True)
class Marker:
    """The `#### N` line the grader commits to, in the plain (normalised) text it read."""

    plain: str  # the completion as the grader reads it (`_normalise`d, a made-up next question cut)
    start: int  # where its "####" starts in `plain`
    line_end: int
    extraction: Extraction  # what it grades: N, or the result of a calculation on the marker's line


def committed_marker(text: str) -> Marker | None:
    """The `#### N` line that `extract` grades (the last marker followed by a number), or None."""
    plain = _normalise(_own_answer(text))
    return _strict_marker(plain)


def _strict_marker(text: str) -> Marker | None:
    for marker in reversed(list(_HASH_MARKER.finditer(text))):
        line_end = text.find("\n", marker.end())
        line_end = len(text) if line_end < 0 else line_end
        m = _NUMBER.search(text, marker.end(), line_end)
        if (
            m is not None
            and _DECOR.fullmatch(text, marker.end(), m.start())
            and not _HEADING_AFTER.match(text, m.end())
        ):
            graded = _found(text, _resolve_calculation(text, m, line_end), "strict")
            return Marker(text, marker.start(), line_end, graded)
    return None


def _last_box(text: str) -> str | None:
    openings = list(_BOX_OPEN.finditer(text))
    if not openings:
        return None
    # Match every brace once (a stack over the braces only), then take the last closed box.
    closing_of: dict[int, int] = {}
    stack: list[int] = []
    for brace in _BRACE.finditer(text, openings[0].end() - 1):
        if brace[0] == "{":
            stack.append(brace.start())
        elif stack:
            closing_of[stack.pop()] = brace.start()
    for opening in reversed(openings):
        close = closing_of.get(opening.end() - 1)
        if close is not None:
            return text[opening.end() : close]
    return None  # only unclosed boxes: a truncated completion


def _before_tail(text: str) -> str:
    """`text` without a closing section that checks or hedges the answer stated before it.

    The section starts a line with a check ("Check:", "### Verification", "Working backwards")
    or a hedge ("Note:", "If you meant", "If I misinterpreted", "Alternatively") and runs to the
    end without a heading, a step, an answer line or a revision ("Wait", "final answer"); a
    hedge's own paragraph computes nothing (no ``=``).
    """
    markers = list(_TAIL_LINE.finditer(text))
    if not markers:
        return text
    goes_on = max((r.start() for r in _REVISION.finditer(text, markers[0].start())), default=-1)
    for line in re.finditer(r"^[^\n]*", text[markers[0].start() :], re.MULTILINE):
        if _TAIL_BLOCKER_LINE.match(line[0]) and not _TAIL_LINE.match(line[0]):
            goes_on = max(goes_on, markers[0].start() + line.start())
    for marker in markers:
        start = marker.start()
        if start <= goes_on or _first_number(text, 0, start) is None:
            continue
        if marker["check"] is None:
            paragraph = _PARAGRAPH_BREAK.search(text, marker.end())
            if "=" in text[start : paragraph.start() if paragraph else len(text)]:
                continue
        return text[:start]
    return text


def _computed(text: str, end: int) -> list[re.Match[str]]:
    """The numbers of text[:end] that are the result of an ``=``."""
    return [m for m in _numbers(text, 0, end) if _EQUALS_BEFORE.search(text[max(0, m.start() - 8) : m.start()])]


def _single_unit(text: str, m: re.Match[str]) -> re.Match[str]:
    """The value the work computed when `m` is part of a mixed-unit answer ("2 hours and 40 minutes"
    after "= 160 minutes" gives 160), else `m`."""
    line_start = text.rfind("\n", 0, m.start()) + 1
    for mixed in _MIXED_UNITS.finditer(text, max(line_start, m.start() - 40), m.end() + 40):
        if m.start() not in (mixed.start("big"), mixed.start("small")):
            continue
        big, small = int(mixed["big"]), int(mixed["small"])
        totals = {big * 60 + small, big + Fraction(small, 60)}
        earlier = [n for n in _computed(text, mixed.start()) if _value(n) in totals]
        return earlier[-1] if earlier else m
    return m


def _committed(text: str, m: re.Match[str], method: str) -> Extraction:
    return _found(text, _single_unit(text, m), method)


def _restated_answer(text: str, start: int, last: re.Match[str]) -> re.Match[str] | None:
    """In a concluding sentence text[start:] that ends by restating a given ("Claire will eat 7
    dozen eggs in 4 weeks"), its last number that the work computed (7), else None.

    The last number is a restated given when it occurs earlier and was never the result of an
    ``=``; the answer must be such a result.
    """
    sentence = _numbers(text, start, last.end())
    if len(sentence) < 2:
        return None
    computed = {_value(m) for m in _computed(text, start)}
    last_value = _value(last)
    if last_value in computed or all(_value(m) != last_value for m in _numbers(text, 0, start)):
        return None
    return next((m for m in reversed(sentence[:-1]) if _value(m) in computed), None)


def _from_phrase(text: str, last: re.Match[str]) -> Extraction | None:
    """Rule 3; `last` is the text's last number."""
    for phrase in reversed(list(_PHRASE.finditer(text))):
        start = phrase.end()
        first = _first_number(text, start, _sentence_end(text, start))
        if first is None:
            continue
        end = _sentence_end(text, first.end())
        if _DECOR.fullmatch(text, start, first.start()):
            return _committed(text, _resolve_calculation(text, first, end), "phrase")
        # Words between the phrase and the number: trust it only if it concludes, and prefer the
        # number the sentence puts in bold ("After 36 months it costs **$92**").
        if phrase["final"] or last.start() < end:
            first = _emphasised(text, phrase.start(), start, end) or first
            return _committed(text, _resolve_calculation(text, first, end), "phrase")
    return None


def _emphasised(text: str, scan: int, start: int, end: int) -> re.Match[str] | None:
    """The first number of text[start:end] inside a ``**...**``, pairing the stars from `scan`."""
    for bold in _BOLD.finditer(text, scan, end):
        m = _first_number(text, max(start, bold.start(1)), bold.end(1))
        if m is not None:
            return m
    return None


def _recapped_bold(text: str, last_equals: int) -> re.Match[str] | None:
    """The number of a bold after the last ``=`` (at `last_equals`) that states that ``=``'s
    result, when all that follows only restates numbers of the text before the bold (a recap:
    "So she spent **$694**." then "That's $204 on donuts, $160 on cupcakes..."), else None."""
    if last_equals < 0:
        return None
    result = _first_number(text, last_equals + 1, _sentence_end(text, last_equals + 1))
    stated = [(b, m) for b in _BOLD.finditer(text, last_equals) if (m := _first_number(text, b.start(1), b.end(1)))]
    if result is None or not stated:
        return None
    bold, m = stated[-1]
    if _value(m) != _value(result):
        return None
    earlier = {_value(n) for n in _numbers(text, 0, bold.start())}
    after = _numbers(text, bold.end())
    return m if after and all(_value(n) in earlier for n in after) else None


def _from_conclusion(text: str, last: re.Match[str]) -> Extraction | None:
    """Rule 4: a bold in the concluding paragraph, or the result of the concluding sentence."""
    paragraph_start = max((b.end() for b in _PARAGRAPH_BREAK.finditer(text, 0, last.start())), default=0)
    last_equals = text.rfind("=")
    for bold in reversed(list(_BOLD.finditer(text, paragraph_start))):
        first = _first_number(text, bold.start(1), bold.end(1))
        if first is not None and bold.end() > last_equals:
            return _committed(text, _resolve_calculation(text, first, bold.end(1)), "bold")
    # "**12 years**\n\nFrom year 13 on it is pure profit": a bold that starts a line after the
    # work is a headline answer; the prose after it comments on it.
    for bold in reversed(list(_HEADLINE_BOLD.finditer(text, 0, paragraph_start))):
        first = _first_number(text, bold.start(1), bold.end(1))
        if first is None:
            continue
        if bold.end() > last_equals:
            return _committed(text, _resolve_calculation(text, first, bold.end(1)), "bold")
        break
    recap = _recapped_bold(text, last_equals)
    if recap is not None:
        return _committed(text, recap, "bold")
    start = max((b.end() for b in _SENTENCE_BREAK.finditer(text, 0, last.start())), default=0)
    equals = text.rfind("=", start, last.start() + 1)
    if equals >= 0:  # "So she makes 9 * 2 = $18 a day": the result of its last equation
        after = _numbers(text, equals + 1, _sentence_end(text, last.end()))
        if after and not _TRAILING_OPERAND.match(text, after[0].end()):
            return _committed(text, after[0], "sentence")
        return None
    # "She needs 33 bananas because there is 1 banana in each batch": a clause that explains the
    # answer comes after it, so its numbers do not conclude (measured on GSM8K's own solutions).
    first = _first_number(text, start, last.start())
    reason = None if first is None else _REASON.search(text, first.end(), last.start())
    if reason is not None:
        return _committed(text, _numbers(text, start, reason.start())[-1], "sentence")
    restated = _restated_answer(text, start, last)
    return None if restated is None else _committed(text, restated, "sentence")


def extract(text: str) -> Extraction:
    """The committed final answer of `text`, by the rules in the module docstring."""
    text = _own_answer(text)
    plain = _normalise(text)
    marker = _strict_marker(plain)
    if marker is not None:
        return marker.extraction
    box = _last_box(text)
    if box is not None:
        return Extraction(box, parse_number(box), "boxed")
    plain = _before_tail(plain)  # cut only after a number, so it leaves a text with numbers some
    numbers = _numbers(plain)
    if not numbers:
        return _NO_ANSWER  # and no marker can hold a number either
    last = numbers[-1]
    return _from_phrase(plain, last) or _from_conclusion(plain, last) or _committed(plain, last, "last_number")


def extract_answer(text: str) -> str | None:
    """The committed final answer of `text` as written (before numeric normalisation), or None."""
    return extract(text).raw


# lm-eval's GSM8K strict-match filter; like lm-eval we take the first match.
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")


def extract_strict(text: str) -> str | None:
    """The `N` of the first `#### N` (lm-eval GSM8K strict-match), or None.

    A match without a digit (`#### .`) counts as no answer.
    """
    m = _STRICT.search(text)
    return m[1] if m and any(ch.isdigit() for ch in m[1]) else None


# --- parsing and comparing -----------------------------------------------------------------------


def _single_number(raw: str, *, equation: bool = True) -> re.Match[str] | None:
    text = _normalise(raw).strip()
    if equation and "=" in text:  # `x = 18`, `3 \times 6 = 18`: the value is the right-hand side
        text = text.rsplit("=", 1)[1].strip()
    if _SPACED_THOUSANDS.fullmatch(text):
        text = text.replace(" ", "")
    if _VALUE_CHANGING_LATEX.search(text):
        return None  # `\sqrt{2}`, `\frac{x}{2}`, `2\pi`: the digits are not the value
    m = _NUMBER.search(text)
    if m is None or any(ch.isdigit() for ch in text[: m.start()]):
        return None  # no number, or one that is preceded by a malformed one (`1,5 and 7`)
    if _TRAILING_OPERAND.match(text, m.end()):
        return None  # an unevaluated expression
    return m


def parse_number(raw: str) -> Fraction | None:
    """The exact value of the number `raw` states (`"$1,000.00"` -> 1000), or None if it states none."""
    m = _single_number(raw)
    return None if m is None else _value(m)


def _parse_gold(gold: str | int | float | Fraction) -> Fraction:
    if isinstance(gold, Fraction | int | float):
        return Fraction(gold)
    return _parse_gold_text(gold)


@functools.lru_cache(maxsize=4096)  # a question's gold is graded once per rollout
def _parse_gold_text(gold: str) -> Fraction:
    # Stricter than a prediction: a gold that holds a second number (a whole solution, or
    # "9 * 2 = 18", passed by mistake) is a data bug, not an answer.
    m = _single_number(gold, equation=False)
    value = None if m is None else _value(m)
    if value is None or any(ch.isdigit() for ch in m.string[m.end() :]):
        raise ValueError(f"gold answer {gold!r} is not a single number: fix the data, it cannot be graded")
    return value


def answers_match(
    predicted: str | None, gold: str | int | float | Fraction, rel_tol: float = 1e-6, abs_tol: float = 1e-6
) -> bool:
    """Whether `predicted` states the number `gold`.

    Integers must be equal; otherwise they may differ by max(abs_tol, rel_tol * |gold|), which
    absorbs float noise such as 0.30000000000000004.

    None or an unparseable prediction is False; an unparseable gold raises ValueError.
    """
    gold_value = _parse_gold(gold)
    if predicted is None:
        return False
    value = parse_number(predicted)
    if value is None:
        logger.debug("prediction %r is not a number", predicted)
        return False
    if value.denominator == 1 and gold_value.denominator == 1:
        # Two integers that differ are different answers, however large (1,000,001 is not 1,000,000).
        return value == gold_value
    return abs(value - gold_value) <= max(Fraction(abs_tol), Fraction(rel_tol) * abs(gold_value))
