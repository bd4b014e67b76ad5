"""bf16 on a CPU without autocast: weights cast once, each network's body in bf16 end to end (no
mixed-dtype ops, casts only at the body's boundary), the image path in fp32; on real CT every shipped
network that 'auto' runs in bf16 stays within BF16_MAX_HU of fp32, the others run fp32 under 'auto'."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import shared_path
from MedSRLib.engine import EngineOptions, Predictor
from MedSRLib.engine import precision as precision_module
from MedSRLib.engine.memory import keep_freed_memory
from MedSRLib.models import get_model
from MedSRLib.models.rewrites import prepare_for_inference, reduced_precision_copy

SHIPPED = sorted(precision_module.BF16_MEASURED_MAX_HU)


class _DtypeRecorder(TorchDispatchMode):
    """Records ops that read floating tensors of two dtypes, and dtype conversions."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []
        self.casts: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        for a in args:
            if isinstance(a, (list, tuple)):
                tensors += [t for t in a if isinstance(t, torch.Tensor)]
        floats = [t for t in tensors if t.is_floating_point() and t.numel() > 1]
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        if len({t.dtype for t in floats}) > 1:
            self.mixed.append(name)
        if name in ("to", "_to_copy") and isinstance(out, torch.Tensor) and floats and floats[0].dtype != out.dtype:
            self.casts.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("name", ["dridsr", "mdrn", "idman-small", "srda-small", "w2amsn-small", "tp-dridsr", "tp-mdrn"])
def test_reduced_copy_runs_the_body_in_bf16_without_mixed_dtype_ops(name):
    spec = get_model(name)
    scale = 4 if name == "srda-small" else 2
    torch.manual_seed(0)
    module = prepare_for_inference(spec.build(scale).eval())
    reduced = reduced_precision_copy(module, torch.bfloat16)
    assert reduced_precision_copy(module, torch.bfloat16) is reduced  # cast once, reused
    kept = {id(m) for n in module.full_precision_layers for m in reduced.get_submodule(n).modules()}
    body = [p for m in reduced.modules() if id(m) not in kept for p in m.parameters(recurse=False)]
    assert body and all(p.dtype == torch.bfloat16 for p in body)
    assert all(p.dtype == torch.float32 for m in reduced.modules() if id(m) in kept for p in m.parameters(recurse=False))
    x = torch.rand(1, 1, 24, 24)
    with torch.inference_mode(), _DtypeRecorder() as rec:
        y = reduced(x, scale) if getattr(reduced, "multi_scale", False) else reduced(x)
    assert y.dtype == torch.float32
    assert rec.mixed == []
    # full-size casts only into and out of the bf16 segments (at most two per network: DRIDSR's low
    # path and residual module, SRDA's body and upsampler); MDRN: up to three per block (into it, out of it
    # into the fp32 residual stream, and its attention statistic); IDMAN: two per block and per group (into
    # the branch, out of it into the fp32 stream); W2AMSN: two per block (likewise). Counted in maps' worth of elements: a
    # boundary may be cast in row bands plus border strips (SRDA x4's fold input), which is still one
    # boundary, where per-layer round trips would add two maps per layer.
    if "mdrn" in name:
        stream_casts = 3 * len(getattr(getattr(reduced, "body", reduced), "blocks", ()))
    elif "idman" in name:
        stream_casts = 2 * sum(len(group.blocks) + 1 for group in reduced.body)
    elif "w2amsn" in name:
        stream_casts = 2 * reduced.n_blocks
    else:
        stream_casts = 0
    full_size = [c for c in rec.casts if c[-2:] != (1, 1)]
    sizes = [math.prod(c) for c in full_size]
    maps = sum(sizes) / max(sizes)
    assert maps <= 4 + stream_casts, rec.casts
    with torch.inference_mode():
        reference = module(x, scale) if getattr(module, "multi_scale", False) else module(x)
    assert float((y - reference).abs().max()) < 0.05


def test_a_reduced_copy_follows_weight_changes():
    module = prepare_for_inference(get_model("dridsr").build(2).eval())
    first = reduced_precision_copy(module, torch.bfloat16)
    with torch.no_grad():
        module.high.f1.weight.mul_(2.0)
    assert reduced_precision_copy(module, torch.bfloat16) is not first


def test_auto_keeps_fp32_for_networks_whose_bf16_error_is_over_the_bound(monkeypatch):
    monkeypatch.setattr(precision_module, "auto_cpu_precision", lambda: ("bf16", "rule"))
    cpu = torch.device("cpu")
    assert precision_module.resolve_precision("auto", cpu, model="dridsr", scale=2) == "bf16"
    for (model, scale), hu in precision_module.BF16_MEASURED_MAX_HU.items():
        expected = "bf16" if hu <= precision_module.BF16_MAX_HU else "fp32"
        assert precision_module.resolve_precision("auto", cpu, model=model, scale=scale) == expected
        assert Predictor(model, scale, options=EngineOptions(device="cpu")).precision == expected
    assert precision_module.resolve_precision("bf16", cpu, model="mdrn", scale=8) == "bf16"  # asked for: runs


def test_freed_memory_is_kept_during_a_run_and_returned_after():
    with keep_freed_memory() as applied:
        with keep_freed_memory():  # reentrant
            pass
    assert applied in (True, False)


def _ct_crops(scale: int) -> tuple[np.ndarray, np.ndarray]:
    from MedSRLib.io import read_volume
    from MedSRLib.resize import degrade

    ct = read_volume(shared_path("totalseg-ct", "example_ct_dicom")).array
    side = min(96 * scale, 384)
    crops = [ct[9, 256 - side // 2 : 256 + side // 2, 256 - side // 2 : 256 + side // 2],
             ct[3, 100 : 100 + side, 120 : 120 + side]]
    hr = [np.clip((c.astype(np.float64) + 1024.0) / 4095.0, 0, 1) for c in crops]
    return np.stack([np.asarray(degrade(h, scale=scale), dtype=np.float32) for h in hr]), np.stack(hr)


@pytest.mark.shared
@pytest.mark.parametrize(("model", "scale"), SHIPPED)
def test_bf16_error_on_real_ct_is_within_the_bound_or_auto_runs_fp32(model, scale):
    lr, _ = _ct_crops(scale)
    fp32 = Predictor(model, scale, options=EngineOptions(device="cpu", precision="fp32", threads=1))
    bf16 = fp32.with_options(EngineOptions(device="cpu", precision="bf16", threads=1))
    diff_hu = np.abs(bf16.run(lr).astype(np.float64) - fp32.run(lr)) * 4095.0
    assert bf16.precision_ran == "bf16" and bf16.describe()["precision"] == "bf16"
    measured = precision_module.BF16_MEASURED_MAX_HU[(model, scale)]
    # the table is current (other CPUs' bf16 kernels round a little differently: some slack)
    assert float(diff_hu.max()) <= 1.15 * measured + 0.5, (model, scale, float(diff_hu.max()))
    if precision_module.bf16_allowed(model, scale):
        assert float(diff_hu.max()) <= precision_module.BF16_MAX_HU


def test_memory_probe_is_cached_per_architecture_on_disk(monkeypatch, tmp_path):
    from MedSRLib.engine import memory
    from MedSRLib.engine.runner import _Forward

    monkeypatch.setenv("MEDSR_CACHE_DIR", str(tmp_path))
    calls = []
    real = memory._peak_forward_bytes
    monkeypatch.setattr(memory, "_peak_forward_bytes", lambda f, side: calls.append(side) or real(f, side))

    def probe(channels: int) -> tuple[float, float]:
        torch.manual_seed(channels)  # weights differ between builds; the architecture decides
        net = prepare_for_inference(torch.nn.Sequential(torch.nn.Conv2d(1, channels, 3, padding=1), torch.nn.PixelShuffle(1),
                                                        torch.nn.Conv2d(channels, 4, 3, padding=1), torch.nn.PixelShuffle(2)))
        forward = _Forward(net, scale=2, device=torch.device("cpu"), dtype=None, channels_last=True, ensemble=False)
        with torch.inference_mode():
            return memory._activation_bytes(forward, min_lr_size=1)

    first = probe(8)
    assert len(calls) == 2 and (tmp_path / "memory_probe.json").is_file()
    assert probe(8) == first and len(calls) == 2  # a new process/module of the same architecture: no probe
    probe(16)
    assert len(calls) == 4  # another architecture is probed
    monkeypatch.setenv("MEDSR_MEMORY_PROBE_CACHE", "0")
    probe(8)
    assert len(calls) == 6


def test_two_cpu_streams_give_the_same_output_progress_and_cancel(monkeypatch):
    from MedSRLib.engine import runner as runner_module
    from MedSRLib.errors import CancelledError

    torch.set_num_threads(2)
    slices = np.random.default_rng(0).random((6, 40, 36), dtype=np.float32)
    predictor = Predictor("dridsr", 2, options=EngineOptions(device="cpu", precision="fp32", threads=2, batch_size=1))
    monkeypatch.setenv(runner_module.CPU_STREAMS_ENV, "1")
    single = predictor.run(slices)
    monkeypatch.setenv(runner_module.CPU_STREAMS_ENV, "2")
    seen: list[tuple[int, int]] = []
    streamed = predictor.run(slices, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(streamed, single, rtol=0, atol=1e-6)
    assert seen[-1] == (6, 6) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    assert torch.get_num_threads() == 2  # restored
    calls = []
    with pytest.raises(CancelledError):
        predictor.run(slices, cancel=lambda: calls.append(1) or len(calls) > 1)


def test_an_unprepared_network_runs_bf16_under_autocast():
    torch.manual_seed(0)
    module = get_model("dridsr").build(2).eval()  # not prepared: no fp32 image-path wrappers
    slices = np.random.default_rng(1).random((1, 24, 24), dtype=np.float32)
    predictor = Predictor("dridsr", 2, module=module, prepare=False,
                          options=EngineOptions(device="cpu", precision="bf16", threads=1))
    with torch.inference_mode():
        reference = module(torch.from_numpy(slices)[:, None])[:, 0].numpy()
    assert float(np.abs(predictor.run(slices) - reference).max()) < 0.05
