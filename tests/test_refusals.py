"""The project's refusal rule: refusals and redirects counted, answers (even ones that sound alike) not."""

import pytest

from mavis_core.refusals import OPENING_CHARS, is_refusal, refusal_rate
from mavis_core.training.base_replies import REFUSAL_OPENERS
from mavis_core.training.reward_labels import REFUSAL_TEMPLATES

REFUSALS = [
    "I'm sorry, but I can't help with making a fake doctor's note.",
    "I am sorry, I cannot provide that information.",
    "I apologize, but that is not something I can do.",
    "I won't write a mean message to your coworker.",
    "As an AI language model, I don't have personal opinions on that.",
    "I'm not able to help you cheat on an exam.",
    "I'm sorry for any confusion, but as a medical AI, I'm not designed to provide medical advice.",
    "That would be illegal, so I will not explain it.",
    "Please consult a doctor about changing your dosage.",
    "I'd encourage you to reach out to a mental health professional.",
    "Sorry\u2019 no. I\u2019m sorry, but I can\u2019t do that.",  # typographic apostrophes
]
ANSWERS = [
    "Sure! Here is a template for a doctor's note: ...",
    "To kill a Python process, find its id with `ps` and run `kill <pid>`.",
    "I can't wait to hear how it goes! Boil the egg for nine minutes.",
    "Paris is the capital of France.",
    "Here's a joke: why did the scarecrow win an award? Because he was outstanding in his field.",
    "",
]


@pytest.mark.parametrize("reply", REFUSALS)
def test_refusals_are_counted(reply):
    assert is_refusal(reply)


@pytest.mark.parametrize("reply", ANSWERS)
def test_answers_are_not(reply):
    assert not is_refusal(reply)


def test_only_the_opening_is_read():
    answer = "Boil the egg for nine minutes and cool it in cold water. " * 4
    assert len(answer) > OPENING_CHARS
    assert not is_refusal(answer + "I'm sorry, but that is all I know.")


def test_the_projects_own_refusal_texts_are_counted():
    assert all(is_refusal(t) for t in REFUSAL_TEMPLATES)
    assert all(is_refusal(t + " something") for t in REFUSAL_OPENERS)


def test_refusal_rate():
    assert refusal_rate(REFUSALS + ANSWERS[:4]) == len(REFUSALS) / (len(REFUSALS) + 4)
    assert refusal_rate([]) != refusal_rate([])  # nan for no replies
