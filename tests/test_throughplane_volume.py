"""Through-plane super-resolution of volumes and its ground-truth evaluation (MedSRLib.throughplane)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedSRLib.engine import EngineOptions, Predictor
from MedSRLib.errors import CancelledError, InputSizeError, ScaleError, UnsupportedImageError
from MedSRLib.models import get_model
from MedSRLib.resize import interpolate_axis, interpolation_matrix
from MedSRLib.throughplane import evaluate_through_plane, foreground_mask, super_resolve_through_plane

from conftest import shared_path


FP32 = EngineOptions(precision="fp32")


def _predictor(net: torch.nn.Module, **options) -> Predictor:
    return Predictor("tp-dridsr", 8, module=net, options=EngineOptions(precision="fp32", **options))


@pytest.fixture(scope="module")
def zero_tail_net() -> Predictor:
    torch.manual_seed(0)
    return _predictor(get_model("tp-dridsr").build(8).eval())  # zero tails: exactly the B-spline base


def _direct(vol: np.ndarray, net: torch.nn.Module, *, axis: int, n_out: int, batch: int = 16) -> np.ndarray:
    """The direct path MedSR used before the Predictor ran through-plane networks (the reference)."""
    n = vol.shape[axis]
    r = int(np.ceil(n_out / n - 1e-9))
    shape = list(vol.shape)
    shape[axis] = n_out
    out = np.zeros(shape, np.float32)
    finish = None if n_out == r * n else torch.tensor(interpolation_matrix(r * n, n_out, "bspline3"), dtype=torch.float32)
    with torch.inference_mode():
        for b in [a for a in (0, 1, 2) if a != axis]:
            src, dst = np.moveaxis(vol, (b, axis), (0, 1)), np.moveaxis(out, (b, axis), (0, 1))
            for k in range(0, src.shape[0], batch):
                y = net(torch.from_numpy(np.ascontiguousarray(src[k : k + batch])[:, None]), r).float()[:, 0]
                dst[k : k + batch] += np.float32(0.5) * (y if finish is None else torch.matmul(finish, y)).numpy()
    return out


@pytest.mark.parametrize("factor", [3, 4.6])
def test_the_predictor_path_equals_the_direct_path_in_fp32(factor: float) -> None:
    """One way to run: the Predictor (batching, channels_last, rewrites) gives today's direct outputs:
    bit-identical at the same batch and memory format, within float rounding with automatic options."""
    torch.manual_seed(3)
    net = get_model("tp-dridsr").build(8).eval()
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vol = np.random.default_rng(0).random((9, 20, 17)).astype(np.float32)
    same = _predictor(net, channels_last=False, batch_size=16)
    out = super_resolve_through_plane(vol, axis=0, factor=factor, predictor=same, project=0, views=2)
    reference = _direct(vol, same.module, axis=0, n_out=out.shape[0])
    assert np.array_equal(out, reference)
    auto = super_resolve_through_plane(vol, axis=0, factor=factor, predictor=_predictor(net), project=0, views=2)
    np.testing.assert_allclose(auto, reference, atol=2e-6, rtol=0)
    tiled = super_resolve_through_plane(vol, axis=0, factor=factor, predictor=_predictor(net, tile=12, tile_overlap=4), project=0, views=2)
    # tiles blend (random weights on noise: seams differ, most voxels do not)
    assert tiled.shape == reference.shape and np.median(np.abs(tiled - reference)) < 1e-3


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_integer_factor_with_zero_tails_is_the_bspline_along_the_thick_axis(zero_tail_net, axis: int) -> None:
    vol = np.random.default_rng(axis).random((6, 7, 8)).astype(np.float32)
    out = super_resolve_through_plane(vol, axis=axis, factor=3, predictor=zero_tail_net, project=0)
    shape = list(vol.shape)
    shape[axis] *= 3
    assert out.shape == tuple(shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, interpolate_axis(vol.astype(np.float64), axis=axis, n_out=shape[axis]), atol=1e-5)


def test_non_integer_factor_runs_ceil_and_finishes_with_the_bspline(zero_tail_net) -> None:
    vol = np.random.default_rng(5).random((8, 6, 5)).astype(np.float32)
    out = super_resolve_through_plane(vol, axis=0, factor=4.6, predictor=zero_tail_net, project=0)
    assert out.shape == (37, 6, 5)  # round(8 x 4.6)
    r_grid = interpolate_axis(vol.astype(np.float64), axis=0, n_out=40)
    np.testing.assert_allclose(out, np.tensordot(interpolation_matrix(40, 37), r_grid, axes=(1, 0)), atol=1e-5)


def test_orientations_are_fused_by_averaging() -> None:
    torch.manual_seed(3)
    net = get_model("tp-dridsr").build(8).eval()
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.05)
    vol = np.random.default_rng(6).random((5, 6, 7)).astype(np.float32)
    a = super_resolve_through_plane(vol, axis=0, factor=2, predictor=_predictor(net), fuse="first", project=0)
    b = super_resolve_through_plane(vol, axis=0, factor=2, predictor=_predictor(net), fuse="second", project=0)
    both = super_resolve_through_plane(vol, axis=0, factor=2, predictor=_predictor(net, batch_size=3), project=0, views=2)
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(both, (a + b) / 2, atol=1e-5)


class RowsAndColumnDifference(torch.nn.Module):
    """A linear, bias-free one-direction "network": rows repeated ``r`` times, plus the difference of each
    pixel's two column neighbours (``x[j-1] - x[j+1]``, zero beyond the slice). Zero padding and zero data
    give the same output, so every view has an exact numpy reference."""

    def forward(self, x: torch.Tensor, r: int) -> torch.Tensor:
        kernel = torch.tensor([[[[1.0, 0.0, -1.0]]]], dtype=x.dtype)
        return (x + torch.nn.functional.conv2d(x, kernel, padding=(0, 1))).repeat_interleave(r, dim=-2)


def _neighbour_difference(v: np.ndarray, dp: int, dq: int) -> np.ndarray:
    """``v[:, i - dp, j - dq] - v[:, i + dp, j + dq]`` of a ``(thick, p, q)`` array, zero outside."""
    pad = np.pad(v, ((0, 0), (1, 1), (1, 1)))
    big_p, big_q = v.shape[1:]
    return (pad[:, 1 - dp : 1 - dp + big_p, 1 - dq : 1 - dq + big_q]
            - pad[:, 1 + dp : 1 + dp + big_p, 1 + dq : 1 + dq + big_q])


@pytest.mark.parametrize("axis, factor", [(0, 2), (1, 2.5), (2, 3)])
def test_four_views_are_the_two_orientations_and_the_two_voxel_diagonals(axis: int, factor: float) -> None:
    """views=4 averages the slices cut along each in-plane axis and along both diagonals of the voxel grid:
    with a network that mixes each pixel's column neighbours, the output equals the numpy reference built
    from the neighbours along q, p, (p, q) and (p, -q); progress counts every slice of every view."""
    vol = np.random.default_rng(axis).random((5, 9, 7)).astype(np.float32)
    predictor = Predictor("tp-dridsr", 8, module=RowsAndColumnDifference(), options=EngineOptions(precision="fp32", batch_size=3))
    seen: list[tuple[int, int]] = []
    out = super_resolve_through_plane(vol, axis=axis, factor=factor, predictor=predictor, project=0, views=4,
                                      progress=lambda d, t: seen.append((d, t)))
    tpq = np.moveaxis(vol, axis, 0)  # (thick, p, q): the two other axes in numpy order
    fused = sum(tpq + _neighbour_difference(tpq, *d) for d in [(0, 1), (1, 0), (1, 1), (1, -1)]) / 4
    n = tpq.shape[0]
    r = int(np.ceil(factor))
    n_out = int(round(n * factor))
    expected = np.tensordot(interpolation_matrix(r * n, n_out, "bspline3") if n_out != r * n else np.eye(r * n),
                            fused.repeat(r, axis=0), axes=(1, 0))
    np.testing.assert_allclose(out, np.moveaxis(expected, 0, axis), atol=1e-5)
    big_p, big_q = tpq.shape[1:]
    total = big_p + big_q + 2 * (big_p + big_q - 1)  # orthogonal slices + diagonals of both directions
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(ValueError, match="views"):
        super_resolve_through_plane(vol, axis=axis, factor=factor, predictor=predictor, views=3)


def test_progress_and_bad_input(zero_tail_net) -> None:
    seen = []
    vol = np.zeros((6, 5, 4), np.float32)
    two = _predictor(zero_tail_net.module, batch_size=2)
    super_resolve_through_plane(vol, axis=0, factor=2, predictor=two, progress=lambda d, t: seen.append((d, t)), views=2)
    # per orientation: 0, then after each batch of 2 (5 slices: 3 batches; 4 slices: 2 batches)
    assert seen[-1] == (9, 9) and all(t == 9 for _, t in seen) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(CancelledError):
        super_resolve_through_plane(vol, axis=0, factor=2, predictor=two, cancel=lambda: True)
    with pytest.raises(ScaleError):
        super_resolve_through_plane(vol, axis=0, factor=1.1, predictor=zero_tail_net)
    with pytest.raises(ScaleError):
        super_resolve_through_plane(vol, axis=0, factor=9, predictor=zero_tail_net)
    with pytest.raises(InputSizeError):
        super_resolve_through_plane(np.zeros((3, 5, 5), np.float32), axis=0, factor=2, predictor=zero_tail_net)
    with pytest.raises(UnsupportedImageError):
        super_resolve_through_plane(np.zeros((6, 5), np.float32), axis=0, factor=2, predictor=zero_tail_net)


def test_evaluation_on_a_real_isotropic_volume_scores_interpolations_inside_the_mask() -> None:
    from MedSRLib.intensity import IntensityMapping
    from MedSRLib.io import read_volume

    v = read_volume(shared_path("isotropic-mr", "sct-spine", "t2.nii.gz"))
    unit = np.clip(IntensityMapping.fit(v.array, modality="MR").to_unit(v.array), 0, 1)
    mask = foreground_mask(unit)
    assert 0.05 < mask.mean() < 1.0
    ev = evaluate_through_plane(unit, axis=0, factor=4, predictor=None)
    assert ev.n_lr == unit.shape[0] // 4 and ev.n_out == 4 * ev.n_lr
    # on real anatomy the cubic B-spline beats linear interpolation, and both are far from perfect
    assert ev.scores["bspline3"].psnr > ev.scores["linear"].psnr
    assert 15 < ev.scores["bspline3"].psnr < 40 and 0 < ev.scores["bspline3"].ssim < 1


def test_adaptation_is_seeded_bounded_and_leaves_the_shipped_network_alone() -> None:
    from MedSRLib.intensity import IntensityMapping
    from MedSRLib.io import read_volume
    from MedSRLib.resize import slice_profile_degrade
    from MedSRLib.throughplane import adapt_through_plane

    v = read_volume(shared_path("isotropic-mr", "sct-spine", "t2.nii.gz"))
    unit = np.clip(IntensityMapping.fit(v.array, modality="MR").to_unit(v.array), 0, 1).astype(np.float32)
    thick = slice_profile_degrade(unit, axis=0, factor=4)  # a real thick volume: 13 slices of 4 mm
    torch.manual_seed(0)
    net = get_model("tp-dridsr").build(8).eval()
    before = {k: t.clone() for k, t in net.state_dict().items()}
    kw = dict(axis=0, factor=4, seconds=0, iterations=4, batch=2, lr_rows=6, cols=24, n_heldout=8, seed=5)
    a, rep_a = adapt_through_plane(net, thick, **kw)
    b, rep_b = adapt_through_plane(net, thick, **kw)
    assert all(torch.equal(before[k], t) for k, t in net.state_dict().items())
    assert rep_a.iterations == 4 and rep_a.r == 4 and rep_a.n_heldout_patches == 8
    assert rep_a.n_train_slices + len(range(4, thick.shape[0], 8)) == thick.shape[0]
    # zero tails at the start: "before" is exactly the B-spline on the held-back patches
    assert abs(rep_a.psnr_before - rep_a.bspline_psnr) < 1e-3
    assert rep_a.psnr_after == rep_b.psnr_after and rep_a.psnr_after >= rep_a.psnr_before  # best weights kept
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(ta, tb), ka
    _, timed = adapt_through_plane(net, thick, **{**kw, "iterations": None, "seconds": 0.5})
    assert 0.25 <= timed.seconds <= 0.75 + 0.5 and timed.iterations >= 1
    # the training steps' precision is the engine's rule (recorded), and bf16 steps still learn
    from MedSRLib.engine.precision import resolve_precision

    assert rep_a.precision == resolve_precision("auto", torch.device("cpu"))
    assert rep_a.to_json()["precision"] == rep_a.precision
    _, fp32 = adapt_through_plane(net, thick, **{**kw, "precision": "fp32"})
    _, bf16 = adapt_through_plane(net, thick, **{**kw, "precision": "bf16", "iterations": 12})
    _, gpu_choice = adapt_through_plane(net, thick, **{**kw, "precision": "fp16"})  # a GPU run's: the CPU's rule
    assert (fp32.precision, bf16.precision, gpu_choice.precision) == ("fp32", "bf16", rep_a.precision)
    assert bf16.psnr_after > bf16.psnr_before


def _spine_thick() -> np.ndarray:
    from MedSRLib.intensity import IntensityMapping
    from MedSRLib.io import read_volume
    from MedSRLib.resize import slice_profile_degrade

    v = read_volume(shared_path("isotropic-mr", "sct-spine", "t2.nii.gz"))
    unit = np.clip(IntensityMapping.fit(v.array, modality="MR").to_unit(v.array), 0, 1).astype(np.float32)
    return slice_profile_degrade(unit, axis=0, factor=4)


def test_adaptation_keeps_the_best_weights_on_its_held_back_patches() -> None:
    """Early stopping: the returned weights are those that scored best on the held-back patches (never
    below the shipped ones); a destructive step size returns the shipped weights unchanged (step 0);
    a timed run and a run of its step count return the same weights (the report's repeat promise)."""
    from MedSRLib.throughplane import adapt_through_plane

    thick = _spine_thick()
    torch.manual_seed(0)
    net = get_model("tp-dridsr").build(8).eval()
    kw = dict(axis=0, factor=4, seconds=0, batch=2, lr_rows=6, cols=24, n_heldout=8, seed=5, check_every=2)
    _, ok = adapt_through_plane(net, thick, iterations=6, **kw)
    assert ok.psnr_after >= ok.psnr_before and ok.kept_step in (0, 2, 4, 6)
    wrecked, bad = adapt_through_plane(net, thick, iterations=4, learning_rate=5.0, schedule="constant", **kw)
    assert bad.kept_step == 0 and bad.psnr_after == bad.psnr_before
    for (k, t), (_, t0) in zip(wrecked.state_dict().items(), net.state_dict().items()):
        assert torch.equal(t, t0), k
    timed_net, timed = adapt_through_plane(net, thick, iterations=None, **{**kw, "seconds": 0.3})
    again_net, again = adapt_through_plane(net, thick, iterations=timed.iterations, **kw)
    assert (again.kept_step, again.psnr_after) == (timed.kept_step, timed.psnr_after)
    for (k, t), (_, t2) in zip(timed_net.state_dict().items(), again_net.state_dict().items()):
        assert torch.equal(t, t2), k


# ------------------------------------------------------------------ back-projection onto the input


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_projection_makes_the_output_re_degrade_to_the_input(axis: int) -> None:
    """After the projection, the slice-profile degradation of the output is (nearly) the input: the
    residual falls at least 4x in 3 steps, and what the report says is what the arrays show."""
    from MedSRLib.resize import slice_profile_degrade
    from MedSRLib.throughplane import project_onto_input

    rng = np.random.default_rng(axis)
    vol = rng.random((9, 10, 11)).astype(np.float32)
    shape = list(vol.shape)
    shape[axis] = 4 * vol.shape[axis] + 1  # a non-integer factor
    out = rng.random(shape).astype(np.float32)
    f = shape[axis] / vol.shape[axis]
    before = float(np.abs(vol - slice_profile_degrade(out, axis=axis, factor=f)).mean())
    report = project_onto_input(vol, out, axis=axis, steps=3)
    after = float(np.abs(vol - slice_profile_degrade(out, axis=axis, factor=f)).mean())
    assert report.residual_before == pytest.approx(before, rel=1e-4)
    assert report.residual_after == pytest.approx(after, rel=1e-3)
    assert after < before / 4


def test_a_consistent_output_is_a_fixed_point_and_chunks_do_not_matter() -> None:
    from MedSRLib.resize import slice_profile_degrade
    from MedSRLib.throughplane import project_onto_input

    rng = np.random.default_rng(7)
    hr = rng.random((30, 8, 9)).astype(np.float32)
    lr = slice_profile_degrade(hr, axis=0, factor=3.0, thickness=3.0 * 1.5)  # thickness 1.5 slice spacings
    kept = hr.copy()
    project_onto_input(lr, kept, axis=0, steps=3, thickness=1.5)
    np.testing.assert_allclose(kept, hr, atol=1e-5)  # D hr = lr already: nothing to correct
    noisy = hr + rng.normal(0, 0.1, hr.shape).astype(np.float32)
    one, many = noisy.copy(), noisy.copy()
    project_onto_input(lr, one, axis=0, steps=2, thickness=1.5, chunk=1)
    project_onto_input(lr, many, axis=0, steps=2, thickness=1.5, chunk=16)
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert not np.allclose(one, noisy, atol=1e-3)


def test_the_network_path_projects_by_default_and_reports_it(zero_tail_net) -> None:
    """``super_resolve_through_plane`` projects (PROJECT_STEPS) unless ``project=0``; the report reaches
    ``on_projection``; with zero tails (B-spline base) the projection changes the output."""
    from MedSRLib.throughplane import PROJECT_STEPS

    vol = np.random.default_rng(9).random((6, 7, 8)).astype(np.float32)
    seen = []
    projected = super_resolve_through_plane(vol, axis=0, factor=3, predictor=zero_tail_net, on_projection=seen.append)
    plain = super_resolve_through_plane(vol, axis=0, factor=3, predictor=zero_tail_net, project=0)
    assert len(seen) == 1 and seen[0].steps == PROJECT_STEPS > 0
    assert seen[0].residual_after < seen[0].residual_before
    assert not np.allclose(projected, plain, atol=1e-4)


def test_projection_reports_the_bspline_reference_and_flags_an_inconsistent_output() -> None:
    """A smooth consistent-ish output is not suspect; noise far from the input is (its residual is
    above cubic B-spline's)."""
    from MedSRLib.resize import interpolate_axis, slice_profile_degrade
    from MedSRLib.throughplane import project_onto_input

    rng = np.random.default_rng(11)
    hr = np.cumsum(np.cumsum(rng.random((40, 12, 12)), axis=0), axis=1).astype(np.float32)
    hr /= hr.max()
    lr = slice_profile_degrade(hr, axis=0, factor=4.0)
    good = project_onto_input(lr, hr.copy(), axis=0)
    bad = project_onto_input(lr, rng.random(hr.shape).astype(np.float32), axis=0)
    reference = float(np.abs(lr - slice_profile_degrade(interpolate_axis(lr, axis=0, n_out=40), axis=0, factor=4.0)).mean())
    assert good.bspline_residual == pytest.approx(reference, rel=1e-4) == bad.bspline_residual
    assert not good.suspect and bad.suspect
    assert good.to_json()["suspect"] is False and bad.to_json()["bspline_residual"] == bad.bspline_residual


def test_adapted_weights_whose_two_orientations_part_ways_are_not_used() -> None:
    """The guard that kept adaptation from lowering the spine volumes: the adapted network is used only
    while its two orientations agree about as well as the shipped network's (ADAPT_MAX_DISAGREEMENT)."""
    from MedSRLib.engine import EngineOptions, Predictor
    from MedSRLib.throughplane import ADAPT_MAX_DISAGREEMENT, AdaptationReport, use_adapted

    thick = _spine_thick()
    spec = get_model("tp-dridsr")
    options = EngineOptions(threads=1, precision="fp32")
    shipped = Predictor(spec, 4, options=options)
    report = AdaptationReport(1.0, 10, 4, 4.0, 12, 8, 20.0, 21.0, 19.0, 0)
    same = Predictor(spec, 4, module=spec.load(8), options=options)
    assert use_adapted(thick, report, axis=0, factor=4, shipped=shipped, adapted=same) and report.used
    assert report.disagreement_shipped > 1e-3 and report.disagreement_adapted == pytest.approx(report.disagreement_shipped)
    broken = spec.load(8)
    with torch.no_grad():
        broken.tails["4"].weight.add_(0.05 * torch.randn(broken.tails["4"].weight.shape, generator=torch.Generator().manual_seed(0)))
    assert not use_adapted(thick, report, axis=0, factor=4, shipped=shipped,
                           adapted=Predictor(spec, 4, module=broken, options=options))
    assert report.disagreement_adapted > ADAPT_MAX_DISAGREEMENT * report.disagreement_shipped
    assert report.to_json()["used"] is False
