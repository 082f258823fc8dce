"""Manual garbage collection as Megatron-LM runs it: the automatic collector off during training, full collections
at the start and every ``manual_gc_interval`` steps, a full one before an evaluation and a young-generation one
after it; the collector restored at the end."""

import gc

from megatron_octo.training.manual_gc import ManualGC


def test_collects_at_the_start_and_every_interval_only(monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation))
    assert gc.isenabled()
    with ManualGC(True, interval=3) as collector:
        assert not gc.isenabled()
        assert calls == [2]
        for step in range(1, 8):
            collector.after_step(step)
        assert calls == [2, 2, 2]  # start, step 3, step 6
        collector.before_eval()
        collector.after_eval()
        assert calls == [2, 2, 2, 2, 0]
    assert gc.isenabled()


def test_interval_zero_and_no_eval_collection(monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation))
    with ManualGC(True, interval=0, at_eval=False) as collector:
        for step in range(1, 5):
            collector.after_step(step)
        collector.before_eval()
        collector.after_eval()
    assert calls == [2, 0]


def test_off_changes_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation))
    with ManualGC(False, interval=1) as collector:
        assert gc.isenabled()
        collector.after_step(1)
        collector.before_eval()
        collector.after_eval()
    assert calls == [] and gc.isenabled()
