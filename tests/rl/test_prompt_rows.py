"""RL prompt files with rows that are not problems: refused with file:line, never turned into a gold "None"."""

from __future__ import annotations

import pytest

from megatron_octo.rl.prompts import PromptError, read_problems


@pytest.mark.parametrize("line, fragment", [
    ('{"prompt": "1+1?", "answer": null}', "answer None is not a gold answer"),
    ('{"prompt": "1+1?", "answer": ""}', "is not a gold answer"),
    ('{"prompt": "1+1?", "answer": [2]}', "is not a gold answer"),
    ('["1+1?", 2]', "not a JSON object"),
    ('{"prompt": null, "answer": 2}', "lacks a prompt/question"),
])
def test_bad_rows_are_refused_with_their_line(tmp_path, line, fragment):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "2+2?", "answer": 4}\n' + line + "\n")
    with pytest.raises(PromptError, match=fragment) as info:
        read_problems(str(path))
    assert f"{path}:2" in str(info.value)


def test_non_utf8_file_is_refused_with_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "2+2?", "answer": "4"}\n{"prompt": "\xff\xfe", "answer": "2"}\n')
    with pytest.raises(PromptError, match=f"{path}:2 is not UTF-8"):
        read_problems(str(path))


def test_numbers_are_gold_answers(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"problem": "2+2?", "answer": 4}\n{"question": "half", "answer": "\\\\frac{1}{2}"}\n')
    assert read_problems(str(path)) == [{"question": "2+2?", "answer": "4"},
                                        {"question": "half", "answer": "\\frac{1}{2}"}]
