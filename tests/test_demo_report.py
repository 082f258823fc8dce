"""The demo's comparison and its sentences follow the numbers they are given (hand-made summaries)."""

from megatron_octo.demo_report import comparison, findings, moving_average


def _summary(long_few, long_zero, long_rl, short_rl_after, long_len, short_len):
    def ev(few, zero):
        return {"few_shot": {"accuracy": few, "stderr": 2.0}, "zero_shot": {"accuracy": zero, "stderr": 2.0,
                                                                            "response_tokens": 40.0}}

    def rl(before, after, se, lengths):
        return {"val_before": {"accuracy": before}, "val_after": {"accuracy": after, "stderr": 2.5},
                "gain": after - before, "gain_stderr": se, "response_length": lengths}

    return {
        "convert": {"decay-long": {}, "decay-short": {}, "decay-hybrid": {}},
        "eval": {"decay-long": ev(long_few, long_zero), "decay-short": ev(50.0, 45.0),
                 "decay-hybrid": ev(55.0, 52.0)},
        "rl": {"decay-long": rl(long_zero, long_rl, 2.0, long_len), "decay-short": rl(45.0, short_rl_after, 2.0,
                                                                                      short_len)},
    }


def test_rows_and_paper_checks_follow_the_numbers():
    cmp = comparison(_summary(30.0, 20.0, 70.0, 60.0, [100.0] * 6, [30.0] * 6))
    long, short, hybrid = cmp["table"]
    assert (long["branch"], long["gain"], long["gain_z"]) == ("long", 50.0, 25.0)
    assert hybrid["rl_after"] is None and hybrid["gain"] is None
    checks = {c["claim"]: c["holds"] for c in cmp["checks"]}
    assert checks == {
        "after decay (few-shot), the Long branch scores below the others": True,  # 30 < 50, 55
        "after RL, the Long branch scores highest": True,  # 70 > 60
        "RL gains most from the Long branch": True,  # +50 > +15
        "the Long branch writes the longest responses during RL (long-CoT verbosity)": True,  # 100 > 30
    }
    text = findings(cmp, chance=5.0)
    assert text[0] == "Best held-out accuracy after decay: hybrid with 55.0% (above the 5% a uniform guess of the " \
                      "answer would score)."
    assert text[1] == ("long: zero-shot with the RL template 20.0%, below its few-shot 30.0% beyond 2 standard errors "
                       "(0 responses without an answer; mean zero-shot response 40 tokens).")  # 10 > 2 x sqrt(8)
    assert len(text) == 2 + 2 + 4  # best, one template gap (short: 50 vs 45 is noise), two RL runs, four checks
    assert text[2].startswith("RL from long: 20.0% -> 70.0% greedy on the held-out problems, +50.0 points, 25.0 paired "
                              "standard errors: a gain beyond 3 standard errors")


def test_sentences_say_when_the_paper_direction_fails_or_ties():
    cmp = comparison(_summary(60.0, 45.0, 47.0, 60.0, [30.0] * 6, [30.0] * 6))
    checks = {c["claim"]: c["holds"] for c in cmp["checks"]}
    assert checks["after decay (few-shot), the Long branch scores below the others"] is False  # 60 > 50
    assert checks["after RL, the Long branch scores highest"] is False  # 47 < 60 by more than 2 x sqrt(2) x 2.5
    near = comparison(_summary(47.0, 45.0, 62.0, 60.0, [33.0] * 6, [30.0] * 6))
    near_checks = {c["claim"]: c["holds"] for c in near["checks"]}
    assert near_checks["after decay (few-shot), the Long branch scores below the others"] is None  # 47 vs 50: noise
    assert near_checks["after RL, the Long branch scores highest"] is None  # 62 vs 60: within 2 x 3.54
    assert near_checks["the Long branch writes the longest responses during RL (long-CoT verbosity)"] is None
    assert checks["the Long branch writes the longest responses during RL (long-CoT verbosity)"] is None  # 30 = 30
    text = "\n".join(findings(cmp, chance=5.0))
    assert "+2.0 points, 1.0 paired standard errors: within noise (under 3 standard errors)" in text
    assert "this does not match the paper's direction" in text
    assert "within noise, so it neither matches nor contradicts" in text


def test_moving_average():
    assert moving_average([1.0, 3.0, 5.0, 7.0], window=2) == [1.0, 2.0, 4.0, 6.0]
