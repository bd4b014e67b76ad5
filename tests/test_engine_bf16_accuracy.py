"""Precision 'auto' on CPU: bf16 only where the CPU computes it natively and a probe measures it
faster than fp32; on real CT its error against fp32 is small in HU and far below the network's own
error against the true image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import shared_path
from MedSRLib import engine
from MedSRLib.engine import _autocast_dtype, cpu_bf16_pays, cpu_has_native_bf16


@pytest.fixture
def fake_cpuinfo(monkeypatch, tmp_path):
    """Point cpu_has_native_bf16 at a fake /proc/cpuinfo with the given flags."""

    def use(flags: str | None) -> None:
        real_open = open

        def fake_open(path, *args, **kwargs):
            if str(path) == "/proc/cpuinfo":
                if flags is None:
                    raise FileNotFoundError(path)
                fake = tmp_path / "cpuinfo"
                fake.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
                return real_open(fake, *args, **kwargs)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", fake_open)
        cpu_has_native_bf16.cache_clear()
        cpu_bf16_pays.cache_clear()

    yield use
    cpu_has_native_bf16.cache_clear()
    cpu_bf16_pays.cache_clear()


@pytest.mark.parametrize(
    ("flags", "gain", "expected"),
    [
        ("fpu sse avx2 avx512f avx512_bf16", 1.9, torch.bfloat16),  # AMD EPYC: bf16 convs 1.9x fp32
        ("fpu sse avx2 amx_tile amx_bf16", 3.0, torch.bfloat16),
        ("fpu sse avx2 avx512f avx512_bf16 avx512_fp16", 0.5, None),  # Intel Xeon VM: flag, but slower
        ("fpu sse avx2 avx512f avx512bw", 2.0, None),  # AVX512 without BF16: emulated, never chosen
        (None, 2.0, None),  # no /proc/cpuinfo (macOS, Windows): fp32
    ],
)
def test_auto_precision_on_cpu_is_bf16_only_where_native_and_measured_faster(fake_cpuinfo, monkeypatch, flags, gain, expected):
    probes = []
    monkeypatch.setattr(engine, "_conv_bf16_gain", lambda: probes.append(1) or gain)
    fake_cpuinfo(flags)
    assert _autocast_dtype("auto", torch.device("cpu")) == expected
    assert _autocast_dtype("fp32", torch.device("cpu")) is None
    assert _autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert _autocast_dtype("auto", torch.device("mps")) is None
    assert len(probes) <= 1  # the probe runs once per process at most, and not without native bf16
    if flags is None or "bf16" not in flags:
        assert not probes


def test_bf16_probe_measures_a_positive_speed_ratio():
    gain = engine._conv_bf16_gain()
    assert 0.05 < gain < 20.0


@pytest.mark.shared
def test_bf16_error_on_real_ct_is_small_in_hu_and_far_below_the_network_error():
    from MedSRLib.io import read_volume
    from MedSRLib.pipeline import super_resolve
    from MedSRLib.resize import degrade
    from MedSRLib.volume import Volume

    ct = read_volume(shared_path("totalseg-ct", "example_ct_dicom"))
    hr = ct.array[8:10, 128:384, 128:384]  # two real 256 x 256 HU slices (z, y, x)
    lr = np.rint(np.asarray(degrade(hr.astype(np.float64), scale=2))).astype(np.int16)
    volume = Volume(lr, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3), modality="CT")
    common = dict(model="dridsr", scale=2, axis=0, output_dtype="float32", device="cpu")
    fp32 = super_resolve(volume, precision="fp32", **common).array.astype(np.float64)
    bf16 = super_resolve(volume, precision="bf16", **common).array.astype(np.float64)
    diff = bf16 - fp32
    rmse_bf16 = float(np.sqrt(np.mean(diff**2)))
    rmse_network = float(np.sqrt(np.mean((fp32 - hr) ** 2)))
    # measured: RMSE 0.5 HU, max ~2.5 HU, against the network's own 15.7 HU RMSE to the true slices
    assert 0 < rmse_bf16 < 1.5, f"bf16 vs fp32 RMSE {rmse_bf16:.2f} HU"
    assert float(np.abs(diff).max()) < 10.0
    assert rmse_bf16 < 0.1 * rmse_network, (rmse_bf16, rmse_network)
    if cpu_bf16_pays():  # 'auto' is bf16 on this CPU: the same numbers as the explicit bf16 run
        auto = super_resolve(volume, precision="auto", **common).array
        np.testing.assert_array_equal(auto, bf16.astype(np.float32))
    assert engine._autocast_dtype("fp32", torch.device("cpu")) is None


@pytest.mark.shared
def test_keeping_the_image_path_in_full_precision_cuts_the_bf16_error():
    from MedSRLib.io import read_volume
    from MedSRLib.models import get_model
    from MedSRLib.models.reparam import prepare_for_inference
    from MedSRLib.resize import degrade

    ct = read_volume(shared_path("totalseg-ct", "example_ct_dicom"))
    hr = np.clip((ct.array[9, 128:320, 128:320].astype(np.float64) + 1024.0) / 4095.0, 0.0, 1.0)
    lr = torch.from_numpy(np.asarray(degrade(hr, scale=2), dtype=np.float32))[None, None]
    spec = get_model("mdrn")
    plain = spec.load(2)
    prepared = prepare_for_inference(spec.load(2))
    assert all(type(prepared.get_submodule(n)).__name__.startswith("FullPrecision") for n in prepared.full_precision_layers)
    with torch.inference_mode():
        reference = plain(lr).double()
        errors = []
        for module in (plain, prepared):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                errors.append(float(((module(lr).double() - reference) ** 2).mean().sqrt()))
        np.testing.assert_allclose(prepared(lr).double(), reference, atol=1e-5)  # exact in fp32
    assert errors[1] < errors[0] / 2, errors
