"""The CPU compatibility layer, switched on and off inside the pytest process (every test leaves it off)."""

from __future__ import annotations

import pytest
import torch

from megatron_octo.parallel import cpu_compat

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="the CPU compatibility layer only switches on where CUDA is absent"
)

_MISSING = object()
# torch.cuda / torch.cuda.random attributes the layer replaces while on (the ones Megatron-Core touches).
_CUDA_NAMES = (
    "current_device", "device_count", "set_device", "synchronize", "get_rng_state", "set_rng_state", "manual_seed",
    "manual_seed_all", "Stream", "Event", "current_stream", "default_generators", "_lazy_call",
)
_RANDOM_NAMES = ("get_rng_state", "set_rng_state")


def _snapshot():
    return (
        {name: getattr(torch.cuda, name, _MISSING) for name in _CUDA_NAMES},
        {name: getattr(torch.cuda.random, name, _MISSING) for name in _RANDOM_NAMES},
    )


@pytest.fixture
def originals():
    """The torch.cuda attributes as they are with the layer off (turned off first in case a test leaked it)."""
    cpu_compat.disable()
    saved = _snapshot()
    yield saved
    cpu_compat.disable()


@pytest.fixture
def compat(originals):
    assert cpu_compat.enable() is True
    assert cpu_compat.is_enabled()
    yield
    cpu_compat.disable()


def test_zeros_on_cuda_lands_on_cpu(compat):
    assert torch.zeros(2, device="cuda").device.type == "cpu"
    assert torch.zeros(2, device="cuda:0").device.type == "cpu"
    assert torch.zeros(2, device=torch.device("cuda", 0)).device.type == "cpu"


def test_current_device_index_lands_on_cpu(compat):
    assert torch.cuda.current_device() == 0
    assert torch.zeros(2, device=torch.cuda.current_device()).device.type == "cpu"
    assert torch.empty(3, device=torch.cuda.current_device()).shape == (3,)


def test_tensor_cuda_and_to_cuda_stay_on_cpu(compat):
    x = torch.arange(4.0)
    assert x.cuda().device.type == "cpu"
    assert torch.equal(x.cuda(), x)
    assert x.to("cuda").device.type == "cpu"
    assert x.to(torch.device("cuda", 0)).device.type == "cpu"
    assert x.to(device="cuda").device.type == "cpu"
    assert x.to(0).device.type == "cpu"  # a bare index is a CUDA device
    moved = x.to("cuda", torch.float64)
    assert moved.device.type == "cpu" and moved.dtype == torch.float64


def test_new_tensor_factories(compat):
    x = torch.ones(2)
    assert x.new_zeros((3,), device="cuda").device.type == "cpu"
    # Sizes given as bare ints are sizes, not device indices.
    assert x.new_zeros(3).shape == (3,)
    assert x.new_empty(2, 3).shape == (2, 3)
    assert x.new_ones(4, device=torch.cuda.current_device()).shape == (4,)


def test_type_reports_the_cuda_type_name(compat):
    assert torch.ones(2).type() == "torch.cuda.FloatTensor"
    assert torch.ones(2, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert torch.ones(2, dtype=torch.float16).type() == "torch.cuda.HalfTensor"


def test_type_with_an_argument_still_converts(compat):
    y = torch.ones(2).type(torch.float64)
    assert y.dtype == torch.float64 and y.device.type == "cpu"
    assert torch.ones(2).type("torch.DoubleTensor").dtype == torch.float64


def test_cuda_rng_state_is_the_cpu_generator(compat):
    torch.manual_seed(7)
    state = torch.cuda.get_rng_state()
    assert torch.equal(state, torch.get_rng_state())
    first = torch.rand(5)
    torch.cuda.set_rng_state(state)
    assert torch.equal(torch.rand(5), first)
    # torch.cuda.random is what Megatron-Core's RNG tracker imports from.
    torch.cuda.random.set_rng_state(state)
    assert torch.equal(torch.rand(5), first)


def test_cuda_default_generator_drives_cpu_sampling(compat):
    torch.cuda.default_generators[0].manual_seed(3)
    a = torch.rand(4)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(4), a)


def test_streams_and_events_are_no_ops(compat):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = torch.ones(2) * 2
    torch.cuda.current_stream().wait_stream(stream)
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    torch.cuda.synchronize()
    assert torch.equal(y, torch.full((2,), 2.0))


def test_is_available_stays_false(compat):
    assert torch.cuda.is_available() is False


def test_enable_twice_is_idempotent(originals):
    assert cpu_compat.enable() is True
    on_once = _snapshot()
    assert cpu_compat.enable() is True
    assert _snapshot() == on_once
    cpu_compat.disable()
    # One disable undoes both enables: nothing stays replaced, no mode stays pushed.
    assert _snapshot() == originals
    assert not cpu_compat.is_enabled()
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1, device="cuda")


def test_disable_restores_the_originals(originals):
    cuda_before, random_before = originals
    cpu_compat.enable()
    assert torch.cuda.current_device is not cuda_before["current_device"]
    cpu_compat.disable()
    cuda_after, random_after = _snapshot()
    for name in _CUDA_NAMES:
        assert cuda_after[name] is cuda_before[name], name
    for name in _RANDOM_NAMES:
        assert random_after[name] is random_before[name], name
    assert not cpu_compat.is_enabled()
    assert torch.ones(2).type() == "torch.FloatTensor"
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1, device="cuda")
    with pytest.raises((AssertionError, RuntimeError)):
        torch.ones(1).cuda()


def test_disable_without_enable_is_harmless(originals):
    cpu_compat.disable()
    assert _snapshot() == originals


def test_enable_changes_nothing_where_cuda_is_available(originals, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda_before, random_before = originals
    assert cpu_compat.enable() is False
    assert not cpu_compat.is_enabled()
    monkeypatch.undo()
    cuda_after, random_after = _snapshot()
    assert all(cuda_after[n] is cuda_before[n] for n in _CUDA_NAMES)
    assert all(random_after[n] is random_before[n] for n in _RANDOM_NAMES)
    assert torch.ones(2).type() == "torch.FloatTensor"
    with pytest.raises((AssertionError, RuntimeError)):
        torch.zeros(1, device="cuda")


def test_compiled_functions_run_eagerly_while_on(originals):
    """A function wrapped in ``torch.compile`` (Megatron-Core's ``jit_fuser`` on a GPU machine, or where it was
    imported before megatron_octo) compiles nothing while the layer is on (Dynamo converts no frame) and gives the
    eager result; with the layer off again, Dynamo is back."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    @torch.compile
    def gelu_bias(x, b):  # [n]
        return torch.nn.functional.gelu(x + b)

    x, b = torch.linspace(-2, 2, 7), torch.full((7,), 0.5)
    torch._dynamo.reset()
    counters.clear()
    cpu_compat.enable()
    assert torch.equal(gelu_bias(x, b), torch.nn.functional.gelu(x + b))
    assert counters["frames"]["total"] == 0
    cpu_compat.disable()
    assert torch._dynamo.config.disable is False
