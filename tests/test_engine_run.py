"""run_slices: shapes, batching, lazy adapters, progress, cancel, wrong-shape networks, ensemble, threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from MedSRLib.engine import EngineOptions, run_slices
from MedSRLib.engine.memory import _activation_bytes
from MedSRLib.engine.runner import _Forward
from MedSRLib.errors import CancelledError, ModelOutputError, ScaleError, UnsupportedImageError
from test_engine_nets import RecordingNet, SymmetricNet, local_net

CPU = EngineOptions(device="cpu", precision="fp32")  # engine mechanics: exact fp32 (bf16 has its own tests)


def _stack(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, h, w), dtype=np.float32)


def _reference(net: nn.Module, slices: np.ndarray) -> np.ndarray:
    """The network applied to one slice at a time, directly in torch."""
    with torch.inference_mode():
        return np.stack([net(torch.from_numpy(s)[None, None])[0, 0].numpy() for s in slices])


@pytest.mark.parametrize("shape,scale", [((3, 17, 20), 2), ((2, 16, 16), 2), ((1, 1, 5), 3), ((4, 9, 7), 4)])
def test_output_shape_and_values_for_odd_and_even_sizes(shape: tuple[int, int, int], scale: int) -> None:
    net = local_net(scale)
    slices = _stack(*shape)
    out = run_slices(net, slices, scale=scale, options=CPU)
    n, h, w = shape
    assert out.shape == (n, scale * h, scale * w) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(net, slices), rtol=0, atol=1e-5)


def test_result_does_not_depend_on_batch_size() -> None:
    net = local_net(2)
    slices = _stack(10, 23, 18)
    results = {
        b: run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", batch_size=b)) for b in (1, 7, 10)
    }
    np.testing.assert_allclose(results[1], results[7], rtol=0, atol=1e-6)
    np.testing.assert_allclose(results[1], results[10], rtol=0, atol=1e-6)
    auto = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", channels_last=False))
    np.testing.assert_allclose(results[1], auto, rtol=0, atol=1e-6)


def test_batches_follow_batch_size_and_budget() -> None:
    net = RecordingNet(local_net(2))
    slices = _stack(10, 16, 16)
    run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", batch_size=4))
    assert [s[0] for s in net.shapes if s[2:] == (16, 16)] == [4, 4, 2]
    net.shapes.clear()
    run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", memory_budget_mb=256))
    assert [s[0] for s in net.shapes if s[2:] == (16, 16)] == [10]  # everything fits: one batch
    net.shapes.clear()
    run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", memory_budget_mb=0.1))
    small = [s[0] for s in net.shapes if s[2:] == (16, 16)]  # 100 kB: a few 16x16 slices at a time
    assert sum(small) == 10 and 1 <= small[0] < 10 and all(b == small[0] for b in small[:-1])


def test_memory_probe_measures_live_activations() -> None:
    # conv 1->32, ReLU (not in place), conv 32->32, head: two 32-channel fp32 maps alive at once = 256 B/px
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                        nn.Conv2d(32, 4, 3, padding=1), nn.PixelShuffle(2)).eval()
    forward = _Forward(net, scale=2, device=torch.device("cpu"), dtype=None, channels_last=False, ensemble=False)
    with torch.inference_mode():
        per_pixel, constant = _activation_bytes(forward, min_lr_size=1)
    assert 256 <= per_pixel <= 256 + 40
    assert constant < 4096


class _LazySlices:
    """Like the pipeline's adapter: normalises on read, never holds the stack as float32."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw, self.shape, self.reads = raw, raw.shape, []

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice) -> np.ndarray:
        self.reads.append((index.start, index.stop))
        return (self.raw[index].astype(np.float32) / 1000.0).astype(np.float32)


class _Sink:
    """Like the pipeline's writer: de-normalises into a preallocated int16 stack."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.stack, self.shape, self.writes = np.zeros(shape, np.int16), shape, []

    def __setitem__(self, index: slice, values: np.ndarray) -> None:
        assert values.dtype == np.float32 and values.shape[1:] == self.shape[1:]
        self.writes.append((index.start, index.stop))
        self.stack[index] = np.round(values * 1000.0).astype(np.int16)


def test_lazy_input_and_output_adapters_are_used_batch_by_batch() -> None:
    raw = (np.random.default_rng(3).random((9, 12, 15)) * 1000).astype(np.int16)
    source, sink = _LazySlices(raw), _Sink((9, 24, 30))
    net = local_net(2)
    returned = run_slices(net, source, scale=2, out=sink, options=EngineOptions(device="cpu", batch_size=4))
    assert returned is sink
    assert source.reads == [(0, 4), (4, 8), (8, 9)] and sink.writes == source.reads
    expected = np.round(_reference(net, raw.astype(np.float32) / 1000.0) * 1000.0).astype(np.int16)
    assert np.abs(sink.stack.astype(int) - expected).max() <= 1


def test_input_is_never_modified_even_by_an_in_place_network() -> None:
    class InPlace(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x.mul_(0.5)  # a careless network writing into its input
            return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    slices = _stack(3, 8, 8)
    before = slices.copy()
    out = run_slices(InPlace(), slices, scale=2, options=CPU)
    np.testing.assert_array_equal(slices, before)
    np.testing.assert_allclose(out[:, ::2, ::2], 0.5 * before, atol=1e-7)


def test_progress_reports_zero_then_each_batch() -> None:
    calls: list[tuple[int, int]] = []
    run_slices(local_net(2), _stack(10, 8, 8), scale=2, options=EngineOptions(device="cpu", batch_size=4),
               progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 10), (4, 10), (8, 10), (10, 10)]


def test_cancel_stops_between_batches() -> None:
    net = RecordingNet(local_net(2))
    slices = _stack(10, 8, 8)
    out = np.full((10, 16, 16), np.nan, np.float32)
    polls: list[int] = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) == 2  # let the first batch run, cancel before the second

    progress: list[tuple[int, int]] = []
    with pytest.raises(CancelledError, match="4 of 10"):
        run_slices(net, slices, scale=2, out=out, options=EngineOptions(device="cpu", batch_size=4),
                   progress=lambda d, t: progress.append((d, t)), cancel=cancel)
    assert progress == [(0, 10), (4, 10)]
    assert [s[0] for s in net.shapes if s[2:] == (8, 8)] == [4]  # no forward after the cancel
    assert not np.isnan(out[:4]).any() and np.isnan(out[4:]).all()


def test_wrong_output_shape_is_a_clear_error_and_nothing_is_written() -> None:
    out = np.full((2, 16, 16), np.nan, np.float32)
    with pytest.raises(ModelOutputError, match=r"expected .*x2"):
        run_slices(local_net(4), _stack(2, 8, 8), scale=2, out=out, options=CPU)  # an x4 network asked for x2
    assert np.isnan(out).all()

    class TwoOutputs(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    with pytest.raises(ModelOutputError, match="tuple"):
        run_slices(TwoOutputs(), _stack(1, 8, 8), scale=1, options=CPU)


def test_bad_slices_scale_and_out_are_rejected() -> None:
    with pytest.raises(UnsupportedImageError, match=r"\(n, h, w\)"):
        run_slices(local_net(2), np.zeros((2, 1, 8, 8), np.float32), scale=2, options=CPU)
    with pytest.raises(ScaleError, match="scale"):
        run_slices(local_net(2), _stack(1, 8, 8), scale=0, options=CPU)
    with pytest.raises(ValueError, match="out has shape"):
        run_slices(local_net(2), _stack(1, 8, 8), scale=2, out=np.zeros((1, 8, 8), np.float32), options=CPU)


def test_empty_stack_returns_empty_output() -> None:
    calls: list[tuple[int, int]] = []
    out = run_slices(local_net(2), np.zeros((0, 8, 9), np.float32), scale=2, options=CPU,
                     progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (0, 16, 18) and calls == [(0, 0)]


def _explicit_ensemble(net: nn.Module, slices: np.ndarray) -> np.ndarray:
    """Mean over the 8 flips x rotations of T^-1(net(T(x))), written out transform by transform."""
    x = torch.from_numpy(slices)[:, None]
    passes = []
    with torch.inference_mode():
        for flip in (False, True):
            for k in range(4):
                xt = torch.rot90(torch.flip(x, dims=[3]) if flip else x, k, dims=[2, 3])
                y = torch.rot90(net(xt), -k, dims=[2, 3])
                passes.append(torch.flip(y, dims=[3]) if flip else y)
    return torch.stack(passes).mean(0)[:, 0].numpy()


def test_ensemble_equals_mean_of_eight_transformed_passes() -> None:
    net = local_net(2)
    slices = _stack(3, 11, 14)
    ensembled = run_slices(net, slices, scale=2, options=EngineOptions(device="cpu", ensemble=True, precision="fp32"))
    np.testing.assert_allclose(ensembled, _explicit_ensemble(net, slices), rtol=0, atol=1e-6)
    single = run_slices(net, slices, scale=2, options=CPU)
    assert np.abs(ensembled - single).max() > 1e-3  # the random network is not equivariant


def test_ensemble_of_an_equivariant_network_equals_one_pass() -> None:
    net = SymmetricNet(3)
    slices = _stack(2, 10, 13)
    single = run_slices(net, slices, scale=3, options=CPU)
    ensembled = run_slices(net, slices, scale=3, options=EngineOptions(device="cpu", ensemble=True, precision="fp32"))
    np.testing.assert_allclose(ensembled, single, rtol=0, atol=1e-6)


def test_ensemble_of_registry_bicubic_equals_one_pass() -> None:
    from MedSRLib.errors import ModelNotFoundError
    from MedSRLib.models import get_model

    try:
        bicubic = get_model("bicubic").build(2)
    except ModelNotFoundError:
        pytest.skip("the bicubic model is not registered yet")
    slices = _stack(2, 12, 9)
    single = run_slices(bicubic, slices, scale=2, options=CPU)
    ensembled = run_slices(bicubic, slices, scale=2, options=EngineOptions(device="cpu", ensemble=True, precision="fp32"))
    np.testing.assert_allclose(ensembled, single, rtol=0, atol=1e-5)


def test_threads_option_applies_during_the_run_and_is_restored() -> None:
    before = torch.get_num_threads()
    net = RecordingNet(local_net(2))
    run_slices(net, _stack(2, 8, 8), scale=2, options=EngineOptions(device="cpu", threads=1))
    assert set(net.threads) == {1}
    assert torch.get_num_threads() == before


def test_module_ends_in_eval_mode() -> None:
    net = local_net(2).train()
    run_slices(net, _stack(1, 8, 8), scale=2, options=CPU)
    assert not net.training


def test_fp16_overflow_is_redone_in_fp32_with_a_warning() -> None:
    class OverflowsInHalf(nn.Module):
        """Returns inf under fp16 autocast (the conv output is half), finite values in fp32."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = local_net(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.inner(x)
            return y * 1e5 * 1e5 if y.dtype == torch.float16 else y

    net = OverflowsInHalf().eval()
    # fp16 autocast is refused by run_slices on CPU; _Forward is what would run it on a GPU
    cpu = torch.device("cpu")
    forward = _Forward(net, scale=2, device=cpu, dtype=torch.float16, channels_last=False, ensemble=False)
    x = torch.from_numpy(_stack(2, 9, 9))[:, None]
    with torch.inference_mode(), pytest.warns(RuntimeWarning, match="overflowed"):
        y = forward(x)
    assert forward.dtype is None and torch.isfinite(y).all()
    np.testing.assert_allclose(y[:, 0].numpy(), _reference(net, x[:, 0].numpy()), rtol=0, atol=1e-6)
