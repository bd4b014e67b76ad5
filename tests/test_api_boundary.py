"""Issue 15 items 10 and 14: the library refuses bad arguments by name, and runs that cannot fit in memory."""

from __future__ import annotations

import numpy as np
import pytest

from MedSRLib import errors
from MedSRLib.pipeline import super_resolve
from MedSRLib.volume import Volume


def _volume() -> Volume:
    return Volume(array=np.arange(2 * 8 * 8, dtype=np.int16).reshape(2, 8, 8), spacing=(1, 1, 3), origin=(0, 0, 0),
                  direction=np.eye(3), modality="MR")


@pytest.mark.parametrize("kwargs, match", [
    ({"modality": 1}, "modality .* got 1"),
    ({"modality": "PET"}, "modality .* got 'PET'"),
    ({"scale": float("inf")}, "scale .* got inf"),
    ({"scale": 2.5}, "scale .* got 2.5"),
    ({"allow_untrained": "no"}, "allow_untrained .* got 'no'"),
])
def test_super_resolve_names_the_bad_value(kwargs, match):
    options = {"model": "bicubic", "scale": 2, **kwargs}
    with pytest.raises(errors.OptionError, match=match):
        super_resolve(_volume(), **options)


def test_a_non_volume_is_a_type_error_naming_what_was_given():
    with pytest.raises(TypeError, match="Volume .* got ndarray"):
        super_resolve(_volume().array, model="bicubic", scale=2)  # type: ignore[arg-type]


@pytest.mark.parametrize("field, value", [("direction", np.full((3, 3), np.nan)), ("origin", (0.0, np.nan, 0.0))])
def test_a_volume_with_nan_geometry_cannot_be_made(field, value):
    with pytest.raises(ValueError, match=f"Volume.{field} must be finite"):
        Volume(**{"array": np.zeros((1, 2, 2)), "spacing": (1, 1, 1), "origin": (0, 0, 0), "direction": np.eye(3),
                  field: value})


def test_a_run_larger_than_memory_is_refused_before_allocating(monkeypatch):
    from MedSRLib import safety

    monkeypatch.setattr(safety, "available_memory_bytes", lambda: 100 * 2**20)
    with pytest.raises(errors.ResourceError, match=r"x8 of a 2x8x8 .*needs about .* GiB of memory but 0.1 GiB") as err:
        super_resolve(_volume().with_array(np.zeros((2, 8, 8), np.int16)), model="bicubic", scale=8)
    assert "--scale" in str(err.value)


def test_the_issue_case_estimate_is_the_32_gib_it_would_allocate():
    from MedSRLib.safety import estimate_run_bytes

    # a valid 2.3 MB .nii.gz of 2048 x 2048 x 64 int16 at --scale 8: output 64 x 16384 x 16384 int16
    needed = estimate_run_bytes((64, 2048, 2048), np.int16, 8)
    assert 32 * 2**30 < needed < 34 * 2**30
