"""Is a `#### N` answer worked out? `worked_answer(text)`: N is the result of the answer's own last calculation.

The check the evaluation reports as "worked out" (and the optional format bonus pays for):

1. The `#### N` that counts is the one the grader grades (`answers.committed_marker`: the last marker
   followed by a number; "#### 44 + 56 = 88" commits to 88), so the two never read different lines.
2. The work's last calculation is the last `expression = result` in the text up to and including the
   marker's line, where the expression holds at least two numbers joined by an operator (+ - * / x
   × ÷, brackets and % allowed): "Natalia sold 48+24 = 72 clips" computes, and so does an
   expression with units between its numbers, as GSM8K's solutions write them ("90 snakes * 12
   beetles/snake = 1080 beetles": the words of the clause before the "=" are dropped); "Step 2: 2",
   "Janet has 16 eggs." and a restated question do not.
3. Its arithmetic is right: the expression's exact value equals the result, up to the rounding the
   result's own decimals allow ("10 / 3 = 3.33" is right, "9 * 2 = 17" is not). "20%" is 0.2,
   and a result written as a percentage is read in percent ("60% * 40% = 24%" is right).
4. N equals that result.

So a bare "#### 2", a number copied from the question, a label, or a wrong sum are not worked
answers: a reward that paid for them would teach a small model to guess.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

from alphazero_llm.answers import committed_marker, parse_number

# The clause an expression sits in starts after the last of these.
_CLAUSE_BREAK = re.compile(r"[:;]|,\s|\.\s")
# A word (a unit, or the clause's prose): "beetles/snake", "push-ups", "/month" (as in "$600/month").
_UNIT = re.compile(r"/?[A-Za-z](?:[A-Za-z'’-]*[A-Za-z])?(?:/[A-Za-z]+)*")
_TIMES_X = re.compile(r"(?<=[\d)\s])[xX](?=[\s\d(])")  # "60 x 60": the letter as a multiplication sign
_RESULT = re.compile(r"\s*[$£€]?\s*(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+))(\s*%)?")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_START = re.compile(r"(?<![\d.,])[\d.$£€(-]")  # where an expression may start: not inside a number
_OPERATORS = {ast.Add: Fraction.__add__, ast.Sub: Fraction.__sub__, ast.Mult: Fraction.__mul__}


def worked_answer(text: str) -> bool:
    """Whether `text` commits to a `#### N` that its own last calculation computes, correctly (module docstring)."""
    marker = committed_marker(text)
    if marker is None or marker.extraction.value is None:
        return False
    for line in reversed(marker.plain[: marker.line_end].splitlines()):
        calculation = last_calculation(line)
        if calculation is not None:
            value, result, decimals = calculation
            return result == marker.extraction.value and _agrees(value, result, decimals)
    return False


def last_calculation(line: str) -> tuple[Fraction, Fraction, int] | None:
    """(value of the expression, the stated result, the result's decimals) of the last `expression = result`
    on `line` whose expression computes (two numbers and an operator); None when the line has none."""
    for equals in reversed([m.start() for m in re.finditer("=", line)]):
        result = _RESULT.match(line, equals + 1)
        stated = None if result is None else parse_number(result[1])
        if stated is None:
            continue
        value = _expression_value(line[:equals])
        if value is not None:
            in_percent = 100 if result[2] is not None else 1  # "60% * 40% = 24%": 0.24, written in percent
            return value * in_percent, stated, len(result[1].partition(".")[2])
    return None


def _expression_value(before: str) -> Fraction | None:
    """The value of the longest arithmetic expression that ends the clause before an "=", its words
    (units, prose) dropped: "she sells 90 snakes * 12 beetles/snake" -> 90 * 12."""
    clause = before[max((m.end() for m in _CLAUSE_BREAK.finditer(before)), default=0) :]
    body = _UNIT.sub(" ", _TIMES_X.sub("*", clause))
    for start in _START.finditer(body):
        value = evaluate(body[start.start() :])
        if value is not None:
            return value
    return None


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression of at least two numbers ("20%" is 20/100), or None (not
    one, or no operator)."""
    body = expression.strip()
    if len(_NUMBER.findall(body)) < 2:
        return None
    body = re.sub(r"[$£€]", "", body)
    body = re.sub(r"(?<=\d),(?=\d{3}\b)", "", body)  # thousands separators
    body = re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", body)
    body = body.replace("×", "*").replace("·", "*").replace("÷", "/").replace("x", "*")
    try:
        tree = ast.parse(body, mode="eval")
    except SyntaxError:
        return None
    if not isinstance(tree.body, ast.BinOp):
        return None  # "(3)" or "-4": no calculation at the top
    try:
        return _value(tree.body)
    except (ValueError, ZeroDivisionError):
        return None


def _value(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp):
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Div):
            return left / right
        if type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"not arithmetic: {ast.dump(node)}")


def _agrees(value: Fraction, result: Fraction, decimals: int) -> bool:
    """`result` is `value` written with `decimals` decimals: exact, or rounded to them."""
    return value == result or abs(value - result) <= Fraction(1, 2 * 10**decimals)
