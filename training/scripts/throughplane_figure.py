"""The README's through-plane figure (issue 20 item 6): a held-out near-isotropic MR volume thickened to
MM-mm slices (Gaussian profile, FWHM = spacing = MM) along AXIS, brought back to the original grid by
cubic B-spline and by the shipped through-plane network; coronal and sagittal reformats of the thick
input (each slice repeated), B-spline, MedSR and the ground truth (:func:`MedSRLib.panel.through_plane_panel`),
with whole-volume PSNR/SSIM inside the foreground mask (:func:`MedSRLib.throughplane.masked_scores`,
the `medsr evaluate --through-plane` convention).

    python training/scripts/throughplane_figure.py ../shared/data/isotropic-mr/seg3d-mr/MR.nii.gz \
        docs/images/throughplane_seg3d_5mm.png --mm 5 --axis axial --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from MedSRLib.engine import EngineOptions, Predictor  # noqa: E402
from MedSRLib.geometry import resolve_slice_axis  # noqa: E402
from MedSRLib.intensity import IntensityMapping  # noqa: E402
from MedSRLib.io import read_volume  # noqa: E402
from MedSRLib.models import default_model  # noqa: E402
from MedSRLib.panel import save_through_plane_panel  # noqa: E402
from MedSRLib.resize import interpolate_axis, lr_length, slice_profile_degrade  # noqa: E402
from MedSRLib.throughplane import foreground_mask, masked_scores, output_length, super_resolve_through_plane  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("volume")
    parser.add_argument("out_png")
    parser.add_argument("--mm", type=float, default=5.0)
    parser.add_argument("--axis", default=None, help="thickened axis (as medsr evaluate --axis; default its default)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    volume = read_volume(args.volume)
    modality = volume.modality or "MR"
    axis = resolve_slice_axis(volume, args.axis)
    spacing = float(volume.spacing[2 - axis])
    factor = args.mm / spacing
    unit = np.clip(IntensityMapping.fit(volume.array, modality=modality).to_unit(volume.array), 0, 1).astype(np.float32)
    lr = slice_profile_degrade(unit, axis=axis, factor=factor)
    n_out = output_length(lr_length(unit.shape[axis], factor), factor)
    gt = np.take(unit, np.arange(n_out), axis=axis)
    spec = default_model(modality, plane="through")
    predictor = Predictor(spec, max(spec.scales), options=EngineOptions(threads=args.threads))
    outputs = {
        "cubic B-spline": interpolate_axis(lr, axis=axis, n_out=n_out, kind="bspline3"),
        f"MedSR {spec.name}": super_resolve_through_plane(lr, axis=axis, factor=factor, predictor=predictor, n_out=n_out),
    }
    mask = foreground_mask(gt)
    scores = {k: vars(masked_scores(v, gt, mask, axis=axis)) for k, v in outputs.items()}
    # the thick input on the fine grid: HR row i shows the LR sample whose centre (j + 0.5) f - 0.5 is nearest
    index = np.clip(np.round((np.arange(n_out) + 0.5) / factor - 0.5).astype(int), 0, lr.shape[axis] - 1)
    thick = np.take(lr, index, axis=axis)
    label = f"{args.mm:g} mm slices ({lr.shape[axis]}, shown repeated)"
    out = save_through_plane_panel(args.out_png, volume, gt, thick, outputs, scores, axis=axis, label=label)
    print(f"wrote {out}: axis {axis}, factor {factor:.3f}, " + ", ".join(
        f"{k} PSNR {v['psnr']:.2f} dB / SSIM {v['ssim']:.4f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
