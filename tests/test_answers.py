"""The GSM8K answer checker: a labelled table of completions, number parsing, and every gold solution.

`CASES` is also the labelled set of bench/bench_grader.py, which loads this file by path.
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import pytest

from alphazero_llm.answers import (
    Extraction,
    answers_match,
    extract,
    extract_answer,
    extract_strict,
    parse_number,
)
from alphazero_llm.data import PATH_ENV_VAR

JANET = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n"
)

# (id, completion, gold, expected_match). Rows with False must *not* match: a grader that
# accepts everything fails them.
CASES: list[tuple[str, str, str, bool]] = [
    # --- lm-eval conventions: `#### N` (strict) and the last number (flexible) ---------------
    ("gsm8k_solution", JANET + "#### 18", "18", True),
    ("strict_thousands", "So she saves 1,000 dollars.\n#### 1,000", "1000", True),
    ("strict_negative", "The temperature fell to -3 degrees.\n#### -3", "-3", True),
    ("strict_decimal_zeros", "#### 18.00", "18", True),
    ("strict_trailing_period", "#### 18.", "18", True),
    ("strict_then_note", "#### 18\n\nNote: 3 eggs were eaten for breakfast.", "18", True),
    ("strict_then_note_not_3", "#### 18\n\nNote: 3 eggs were eaten for breakfast.", "3", False),
    ("strict_last_marker_wins", "#### 5\nWait, I forgot the muffins.\n#### 18", "18", True),
    ("strict_last_marker_not_first", "#### 5\nWait, I forgot the muffins.\n#### 18", "5", False),
    ("strict_dollar", "#### $18", "18", True),
    ("strict_bold", "#### **18**", "18", True),
    ("strict_calculation", "#### 9 * 2 = 18", "18", True),
    ("strict_units", "#### 18 dollars", "18", True),
    ("strict_no_space", "####18", "18", True),
    (
        "made_up_next_question",
        "9 * 2 = 18\n#### 18\n\nQuestion: A robe takes 2 + 1 bolts?\nAnswer: 3\n#### 3",
        "18",
        True,
    ),
    (
        "made_up_next_question_not_3",
        "9 * 2 = 18\n#### 18\n\nQuestion: A robe takes 2 + 1 bolts?\nAnswer: 3\n#### 3",
        "3",
        False,
    ),
    ("restated_question_first", "Question: Janet's ducks lay 16 eggs and she eats 3.\nAnswer: 16 - 3 = 13", "13", True),
    ("strict_over_later_box", "#### 18\nAs LaTeX: \\boxed{20}", "18", True),
    ("heading_step_is_not_marker", "#### Step 1: Eggs\n16 - 3 - 4 = 9\n#### Step 2: Money\nShe makes $18.", "18", True),
    ("heading_number_is_not_marker", "#### 1. Eggs\n16 - 3 - 4 = 9\n#### 2. Money\nThe answer is 18.", "18", True),
    ("heading_number_not_answer", "#### 1. Eggs\n16 - 3 - 4 = 9\n#### 2. Money\nThe answer is 18.", "2", False),
    ("flexible_last_number", "She makes 9 * 2 = 18 dollars", "18", True),
    ("calc_annotations", "She makes 9 * 2 = $<<9*2=18>>18 every day.", "18", True),
    ("calc_annotation_not_answer", "She makes 9 * 2 = $<<9*2=18>>18 every day.", "2", False),
    # --- math-verify conventions: boxes, fractions, percent, dollars ----------------------------
    ("boxed", "So the total is \\boxed{18}.", "18", True),
    ("boxed_in_inline_math", "The answer is \\(\\boxed{18}\\).", "18", True),
    ("boxed_latex_thousands", "$\\boxed{1{,}000}$", "1000", True),
    ("boxed_comma_thousands", "\\boxed{1,000}", "1000", True),
    ("boxed_thin_space_thousands", "\\boxed{1\\,000}", "1000", True),
    ("boxed_dollar", "\\boxed{\\$18}", "18", True),
    ("boxed_text_units", "\\boxed{18 \\text{ dollars}}", "18", True),
    ("boxed_decimal_zeros", "\\boxed{18.00}", "18", True),
    ("boxed_frac_vs_decimal", "\\boxed{\\frac{1}{2}}", "0.5", True),
    ("boxed_dfrac", "\\boxed{\\dfrac{3}{4}}", "0.75", True),
    ("boxed_frac12", "\\boxed{\\frac12}", "0.5", True),
    ("boxed_mixed_number", "\\boxed{1\\frac{1}{2}}", "1.5", True),
    ("boxed_negative_frac", "\\boxed{-\\frac{3}{4}}", "-0.75", True),
    ("boxed_frac_not_numerator", "\\boxed{\\frac{3}{4}}", "3", False),
    ("boxed_percent", "\\boxed{50\\%}", "50", True),
    ("boxed_space_before_brace", "\\boxed {18}", "18", True),
    ("fbox", "\\fbox{18}", "18", True),
    ("boxed_nested_text", "\\boxed{\\text{\\textbf{18}}}", "18", True),
    ("boxed_equation", "\\boxed{x = 18}", "18", True),
    ("boxed_last_wins", "First guess: \\boxed{20}. Actually, \\boxed{18}.", "18", True),
    ("boxed_last_not_first", "First guess: \\boxed{20}. Actually, \\boxed{18}.", "20", False),
    ("boxed_wrong", "16 - 3 - 4 = 9 and 9 * 2 = 18, so \\boxed{17}", "18", False),
    ("boxed_non_number_commits", "She makes 18 dollars. \\boxed{\\text{Janet}}", "18", False),
    ("boxed_unevaluated_expression", "\\boxed{9 \\times 2}", "18", False),
    ("boxed_then_question_restated", "\\boxed{18}\n\nJanet's ducks lay 16 eggs per day.", "18", True),
    ("boxed_then_question_not_16", "\\boxed{18}\n\nJanet's ducks lay 16 eggs per day.", "16", False),
    ("boxed_unclosed_is_ignored", "16 - 3 - 4 = 9, 9 * 2 = 18, so \\boxed{18", "18", True),
    # --- answer phrases --------------------------------------------------------------------------
    ("the_answer_is", "The answer is 18.", "18", True),
    ("answer_is_colon_dollar_thousands", "The answer is: $1,000.", "1000", True),
    ("final_answer_bold_label", "**Final Answer:** 18", "18", True),
    ("final_answer_bold_number", "Final answer: **18**", "18", True),
    ("answer_colon", "Answer: 18", "18", True),
    ("a_colon_after_question", "Q: Janet has 16 eggs and eats 3. How many are left?\nA: 13", "13", True),
    ("a_colon_not_question_number", "Q: Janet has 16 eggs and eats 3. How many are left?\nA: 13", "3", False),
    ("answer_in_dollar_math", "The final answer is $18$.", "18", True),
    ("answer_in_paren_math", "The answer is \\(18\\).", "18", True),
    ("answer_upper_case", "THE ANSWER IS 18", "18", True),
    ("final_answer_on_next_line", "**Final Answer**\n\n$18$", "18", True),
    ("final_answer_words_first", "The final answer is: Janet makes $18 every day at the market.", "18", True),
    ("answer_then_because", "The answer is 18 because she sells 9 eggs at $2 each.", "18", True),
    ("answer_then_because_not_2", "The answer is 18 because she sells 9 eggs at $2 each.", "2", False),
    ("answer_then_equation", "The answer is 18, since 16 - 3 - 4 = 9 and 9 * 2 = 18.", "18", True),
    ("answer_then_equation_not_9", "The answer is 18, since 16 - 3 - 4 = 9 and 9 * 2 = 18.", "9", False),
    ("answer_is_calculation", "The answer is 9 * 2 = 18.", "18", True),
    ("answer_then_question_restated", "The answer is 18.\n\nRecall: the ducks lay 16 eggs and she eats 3.", "18", True),
    ("answer_then_question_not_3", "The answer is 18.\n\nRecall: the ducks lay 16 eggs and she eats 3.", "3", False),
    ("answer_last_statement_wins", "The answer is 20. Wait, I forgot the muffins. The answer is 18.", "18", True),
    ("answer_retracted", "The answer is 20. Wait, I forgot the muffins. The answer is 18.", "20", False),
    ("answer_to_the_question", "The answer to the question is 18.", "18", True),
    ("answer_negative", "The answer is -3.", "-3", True),
    ("answer_unicode_minus", "The answer is −3.", "-3", True),
    ("answer_en_dash_minus", "Answer: –3", "-3", True),
    ("answer_minus_not_positive", "The answer is −3.", "3", False),
    (
        "answer_year",
        "She was born in 1990, and she turned 28 in the year the answer asks for. The answer is 2018.",
        "2018",
        True,
    ),
    ("answer_then_year", "The answer is 18. (The market opened in 2015.)", "18", True),
    ("answer_prefix_then_work", "Answer: Janet has 16 eggs. She keeps 7, so she sells 9 for 9 * 2 = $18.", "18", True),
    (
        "answer_prefix_then_work_not_16",
        "Answer: Janet has 16 eggs. She keeps 7, so she sells 9 for 9 * 2 = $18.",
        "16",
        False,
    ),
    ("answer_word_without_marker", "To answer this, 16 - 3 - 4 = 9 eggs and 9 * 2 = 18 dollars.", "18", True),
    (
        "chatty_wrong_answer",
        "Great question! The ducks lay 16 eggs, so I think she makes $20. The answer is 20.",
        "18",
        False,
    ),
    ("chatty_wrong_after_right", "She makes $18? Hmm, no. I think the correct amount is $20 per day.", "18", False),
    # --- chat style: markdown bold, LaTeX ---------------------------------------------------------
    ("bold_concluding", "Janet has 16 - 3 - 4 = 9 eggs left.\n\nShe earns **$18** per day.", "18", True),
    (
        "bold_after_step_headers",
        "**Step 1:** 16 - 3 - 4 = 9 eggs.\n**Step 2:** 9 × 2 = 18 dollars.\n\nShe makes **$18** a day.",
        "18",
        True,
    ),
    ("bold_intermediate_then_work", "She has **9** eggs left. She sells them: 9 × 2 = 18 dollars.", "18", True),
    ("bold_intermediate_not_answer", "She has **9** eggs left. She sells them: 9 × 2 = 18 dollars.", "9", False),
    ("bold_header_label_only", "**Step 3: Total**\nShe makes 18 dollars.", "18", True),
    ("bold_header_not_answer", "She makes 18 dollars.\n\n**Step 3: Check**", "3", False),
    (
        "chat_latex_full",
        "To solve this, first find the eggs left:\n\\[ 16 - 3 - 4 = 9 \\]\nThen the money:\n"
        "\\[ 9 \\times \\$2 = \\$18 \\]\n\n**Final Answer:** \\(\\boxed{18}\\)",
        "18",
        True,
    ),
    ("latex_money_equation", "She earns \\( 9 \\times \\$2 = \\$18 \\) per day.", "18", True),
    # --- number formats --------------------------------------------------------------------------
    ("dollar_sign", "She makes $18.", "18", True),
    ("decimal_zeros", "She makes 18.00 dollars.", "18", True),
    ("millions", "The answer is 1,000,000.", "1000000", True),
    ("million_off_by_one", "The answer is 1,000,001.", "1000000", False),
    ("thin_space_thousands", "The answer is 1\u2009000.", "1000", True),
    ("no_break_space_thousands", "Answer: 1\u00a0000", "1000", True),
    ("percent", "The answer is 50%.", "50", True),
    ("fraction_vs_decimal", "The answer is 1/2.", "0.5", True),
    ("decimal_vs_fraction_gold", "The answer is 0.5", "1/2", True),
    ("units_cm", "The answer is 5 cm.", "5", True),
    ("units_hours", "It takes 3 hours.", "3", True),
    ("trailing_period", "The total is 18.", "18", True),
    ("near_miss_decimal", "The answer is 18.5", "18", False),
    ("rounded_is_not_exact", "The answer is 33.33", "33", False),
    ("float_noise", "The answer is 0.30000000000000004", "0.3", True),
    ("comma_list_is_not_thousands", "The answer is 1,5.", "15", False),
    ("scientific", "The answer is 1e3.", "1000", True),
    ("negative_dollars", "Her balance is -$5.", "-5", True),
    ("markdown_bullet_is_not_minus", "- 18 dollars", "18", True),
    ("markdown_bullet_not_negative", "- 18 dollars", "-18", False),
    # --- traps -----------------------------------------------------------------------------------
    ("step_label_at_end", "She makes 9 * 2 = 18 dollars.\n\nStep 2:", "18", True),
    ("step_label_not_answer", "She makes 9 * 2 = 18 dollars.\n\nStep 2:", "2", False),
    ("list_labels", "1. Eggs left: 16 - 3 - 4 = 9\n2. Money: 9 * 2 = 18\n3. Done", "18", True),
    ("date_is_not_a_number", "The answer is 18. Written on 12/25/2020.", "18", True),
    ("percent_then_answer", "50% of 36 is 18. The answer is 18.", "18", True),
    ("day_label", "Day 3: she makes 18 dollars.", "18", True),
    ("because_clause", "She needs 33 bananas because there is 1 banana in each batch.", "33", True),
    ("version_number", "The answer is 1.2.3", "1.2", False),
    ("no_number", "I don't know.", "18", False),
    ("empty", "", "18", False),
]


@pytest.mark.parametrize(
    ("completion", "gold", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_table(completion: str, gold: str, expected: bool) -> None:
    found = extract(completion)
    assert answers_match(extract_answer(completion), gold) is expected, found


def test_table_is_large_and_can_fail() -> None:
    assert len(CASES) >= 80
    assert len({case[0] for case in CASES}) == len(CASES)
    assert sum(not case[3] for case in CASES) >= 20


@pytest.mark.parametrize(
    ("text", "method"),
    [
        ("#### 18", "strict"),
        ("\\boxed{18}", "boxed"),
        ("The answer is 18.", "phrase"),
        ("We get **18** apples.", "bold"),
        ("So 9 * 2 = 18 dollars.", "sentence"),
        ("She has 18 apples.", "last_number"),
        ("No idea.", "none"),
    ],
)
def test_extract_reports_the_rule(text: str, method: str) -> None:
    assert extract(text).method == method


@pytest.mark.parametrize("completion", [case[1] for case in CASES], ids=[case[0] for case in CASES])
def test_raw_answer_parses_to_the_extracted_value(completion: str) -> None:
    found = extract(completion)
    assert isinstance(found, Extraction)
    assert (found.raw is None) == (found.method == "none")
    if found.raw is not None:
        assert parse_number(found.raw) == found.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 18", "18"),
        ("#### -3", "-3"),
        ("#### 1,000", "1,000"),
        ("#### 18.", "18."),
        ("#### 5\n#### 18", "5"),  # lm-eval keeps the first match
        ("####18", None),
        ("#### $18", None),
        ("#### .", None),
        ("The answer is 18", None),
        ("\\boxed{18}", None),
    ],
)
def test_extract_strict(text: str, expected: str | None) -> None:
    assert extract_strict(text) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("18", Fraction(18)),
        ("$18", Fraction(18)),
        ("\\$18", Fraction(18)),
        ("18.00", Fraction(18)),
        ("18.", Fraction(18)),
        ("$18.50", Fraction(37, 2)),
        ("1,000", Fraction(1000)),
        ("1,000,000", Fraction(10**6)),
        ("1,000.5", Fraction(2001, 2)),
        ("1 000", Fraction(1000)),
        ("1\u2009000", Fraction(1000)),
        ("1\u202f000", Fraction(1000)),
        ("1\u00a0000", Fraction(1000)),
        ("1{,}000", Fraction(1000)),
        ("1\\,000", Fraction(1000)),
        ("1\\!000", Fraction(1000)),
        ("50%", Fraction(50)),
        ("50\\%", Fraction(50)),
        ("18 dollars", Fraction(18)),
        ("5 cm", Fraction(5)),
        ("3 hours.", Fraction(3)),
        ("-3", Fraction(-3)),
        ("−3", Fraction(-3)),
        ("–3", Fraction(-3)),
        ("-$5", Fraction(-5)),
        ("$-5", Fraction(-5)),
        ("3/4", Fraction(3, 4)),
        ("\\frac{3}{4}", Fraction(3, 4)),
        ("\\dfrac{3}{4}", Fraction(3, 4)),
        ("\\tfrac{3}{4}", Fraction(3, 4)),
        ("\\frac12", Fraction(1, 2)),
        ("1\\frac{1}{2}", Fraction(3, 2)),
        ("-\\frac{1}{2}", Fraction(-1, 2)),
        ("\\frac{-1}{2}", Fraction(-1, 2)),
        ("\\text{18 dollars}", Fraction(18)),
        ("1e3", Fraction(1000)),
        (".5", Fraction(1, 2)),
        ("x = 18", Fraction(18)),
        ("0.333", Fraction(333, 1000)),
        ("", None),
        ("abc", None),
        ("-", None),
        ("1,5", None),
        ("1,00,000", None),
        ("1.2.3", None),
        ("3 \\times 6", None),
        ("18 - 20", None),
        ("1/0", None),
        ("12/25/2020", None),
        ("\\frac{x}{2}", None),
        ("\\sqrt{2}", None),
        ("x^2", None),
        ("10^3", None),
    ],
)
def test_parse_number(raw: str, expected: Fraction | None) -> None:
    assert parse_number(raw) == expected


@pytest.mark.parametrize("gold", ["", "abc", "eighteen", "18 or 20", "9 * 2 = 18", "She makes 9 * 2 = 18.\n#### 18"])
def test_unparseable_gold_raises(gold: str) -> None:
    with pytest.raises(ValueError, match="gold answer"):
        answers_match("18", gold)
    with pytest.raises(ValueError, match="gold answer"):
        answers_match(None, gold)  # a data bug is reported even when there is nothing to grade


@pytest.mark.parametrize(
    ("predicted", "gold", "expected"),
    [
        (None, "18", False),
        ("", "18", False),
        ("eighteen", "18", False),
        ("18", 18, True),
        ("1/3", Fraction(1, 3), True),
        ("0.3333333", "1/3", True),
        ("0.333", "1/3", False),
        ("1000001", "1000000", False),
        ("1000000.0000001", "1000000", True),
        ("0.1", 0.1, True),
        ("1,200", "1,200", True),
    ],
)
def test_answers_match(predicted: str | None, gold: str | int | Fraction, expected: bool) -> None:
    assert answers_match(predicted, gold) is expected


# --- every GSM8K gold solution ----------------------------------------------------------------

FLEXIBLE_WITHOUT_MARKER_MIN = 0.99  # measured 0.9917 on the 8,792 solutions


def default_gsm8k_dir() -> Path:
    """$GSM8K_PATH (the variable the library reads), else ../shared/data/gsm8k next to the repository."""
    return Path(os.environ.get(PATH_ENV_VAR) or Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k")


def load_gsm8k_solutions(directory: Path | None = None) -> list[tuple[str, str]]:
    """(solution, gold number) for every row of the local GSM8K train and test files."""
    directory = default_gsm8k_dir() if directory is None else directory
    rows = []
    for split in ("train", "test"):
        with (directory / f"{split}.jsonl").open(encoding="utf-8") as f:
            for line in f:
                solution = json.loads(line)["answer"]
                rows.append((solution, solution.split("####")[-1].strip().replace(",", "")))
    return rows


@pytest.fixture(scope="module")
def gsm8k(gsm8k_dir: Path) -> list[tuple[str, str]]:
    """Every gold solution; `gsm8k_dir` (conftest) skips with a reason when the files are absent."""
    return load_gsm8k_solutions(gsm8k_dir)


def test_every_gold_solution_matches_its_gold(gsm8k: list[tuple[str, str]]) -> None:
    assert len(gsm8k) == 8792
    failures = [(s, g) for s, g in gsm8k if not answers_match(extract_answer(s), g)]
    assert failures == []
    assert [(s, g) for s, g in gsm8k if extract(s).method != "strict"] == []


def test_strict_extractor_on_every_gold_solution(gsm8k: list[tuple[str, str]]) -> None:
    assert [(s, g) for s, g in gsm8k if not answers_match(extract_strict(s), g)] == []


def test_flexible_rules_without_the_marker(gsm8k: list[tuple[str, str]]) -> None:
    """With the `#### N` line removed, the other rules must still find the answer almost always."""
    hits = sum(answers_match(extract_answer(s[: s.rindex("####")]), g) for s, g in gsm8k)
    assert hits / len(gsm8k) >= FLEXIBLE_WITHOUT_MARKER_MIN
