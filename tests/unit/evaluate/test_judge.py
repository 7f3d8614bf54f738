"""LLM-as-judge: the prompt it is given and how its reply becomes a score."""

from __future__ import annotations

from hone.config import JudgeSettings
from hone.evaluate.judge import judge_prompt, parse_score


def test_scores_are_the_first_number_in_range_over_the_scale() -> None:
    assert parse_score("4", 5) == 0.8
    assert parse_score("Score: 5/5", 5) == 1.0
    assert parse_score("0 then 3", 5) == 0.6  # 0 is off the 1-5 scale; 3 is the first usable number
    assert parse_score("10", 5) is None
    assert parse_score("great answer", 5) is None
    assert parse_score("7", 10) == 0.7


def test_the_judge_sees_rubric_question_reference_and_answer() -> None:
    settings = JudgeSettings(model="x", rubric="Exact JSON only.", max_score=10)
    system, user = judge_prompt(settings, "Ticket text", '{"a": 1}', '{"a": 2}')
    assert system["role"] == "system" and "only the score" in system["content"]
    content = user["content"]
    for part in ("Rubric: Exact JSON only.", "Ticket text", '{"a": 1}', '{"a": 2}', "Score from 1 to 10:"):
        assert part in content
    assert content.index('{"a": 1}') < content.index('{"a": 2}'), "reference before the graded answer"
