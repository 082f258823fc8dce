"""Formatters: the RECIPE.md templates written out by hand, field names, empty and malformed records."""

from __future__ import annotations

import pytest

from megatron_octo.data.formatters import FORMATS, RecordError, make_formatter


def test_the_four_formats():
    assert FORMATS == ("text", "qa", "long_cot", "chat")


def test_text_is_the_field_unchanged():
    assert make_formatter("text")({"text": "  Web page\nwith lines  "}) == "  Web page\nwith lines  "
    assert make_formatter("text", text_field="content")({"content": "x", "text": "y"}) == "x"


def test_qa_template_from_the_recipe():
    record = {"problem": "What is 2 + 3?", "solution": "5"}
    f = make_formatter("qa", question_field="problem", answer_field="solution")
    assert f(record) == "User: What is 2 + 3?\nAssistant: 5"


def test_qa_numeric_answer_becomes_text():
    assert make_formatter("qa")({"question": "1+1?", "answer": 2}) == "User: 1+1?\nAssistant: 2"


def test_long_cot_question_line_break_think_then_answer():
    f = make_formatter("long_cot")
    record = {"question": "Q?", "reasoning": "step 1\nstep 2", "answer": "A."}
    assert f(record) == "Q?\n<think>\nstep 1\nstep 2\n</think>\nA."


def test_long_cot_does_not_double_think_tags():
    f = make_formatter("long_cot", reasoning_field="generation")
    record = {"question": "Q?", "generation": "<think>\nr\n</think>", "answer": "A."}
    assert f(record) == "Q?\n<think>\nr\n</think>\nA."


def test_chat_turns_as_user_and_assistant():
    f = make_formatter("chat")
    record = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"},
                           {"role": "assistant", "content": "4"}]}
    assert f(record) == "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: 2+2?\nAssistant: 4"


def test_chat_accepts_sharegpt_turns():
    record = {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}
    assert make_formatter("chat", messages_field="conversations")(record) == "User: Q\nAssistant: A"


@pytest.mark.parametrize("kind, record", [
    ("text", {"text": "   "}),
    ("text", {"text": None}),
    ("qa", {"question": "Q", "answer": ""}),
    ("long_cot", {"question": "Q", "reasoning": "", "answer": "A"}),
    ("chat", {"messages": [{"role": "user", "content": "only a question"}]}),
])
def test_empty_documents_are_none(kind, record):
    assert make_formatter(kind)(record) is None


def test_missing_field_names_the_field_and_the_available_ones():
    with pytest.raises(RecordError) as excinfo:
        make_formatter("qa")({"prompt": "Q", "answer": "A", "id": 3})
    message = str(excinfo.value)
    assert "'question'" in message and "answer, id, prompt" in message


def test_non_object_and_wrong_types_are_record_errors():
    with pytest.raises(RecordError, match="JSON object"):
        make_formatter("text")(["a list"])
    with pytest.raises(RecordError, match="must be a string"):
        make_formatter("text")({"text": {"nested": 1}})
    with pytest.raises(RecordError, match="role"):
        make_formatter("chat")({"messages": [{"role": "robot", "content": "x"}]})


def test_required_fields_and_bad_options():
    assert make_formatter("long_cot", question_field="problem").required == ["problem", "reasoning", "answer"]
    with pytest.raises(ValueError, match="unknown format"):
        make_formatter("markdown")
    with pytest.raises(ValueError, match="unknown field"):
        make_formatter("qa", prompt_field="x")
