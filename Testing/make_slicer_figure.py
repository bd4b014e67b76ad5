"""The Extensions Index figure: input/output reformats of the MedSR module's logic, drawn with MedSRLib.panel.

Not a capture of Slicer's window (none can be made here): the volumes are real MRML volume nodes
(slicer-core, with the test shims of ``tests/slicer_double`` for the application pieces), super-resolved
by ``MedSRLogic.process`` exactly as the panel's *Super-resolve volume* button does, and the sagittal
reformats of those nodes are drawn with the project's own comparison-panel code (``MedSRLib.panel``).

Input: the real sagittal T1 (``../shared/data/mr-volumes/t1_fl2d_sag_LPS.nii.gz``, 1.0156 mm pixels,
4.8 mm slices), read by Slicer's reader. Its middle 3 sagittal slices are degraded x2 in-plane with
MedSRLib's training degradation (``MedSRLib.resize.degrade``) into a low-resolution volume node placed so
that its x2 super-resolved grid is the original grid (checked), so the original slice is the reference
and every column can be scored (PSNR/SSIM, ``basicsr`` convention, one intensity mapping for all).

    python Testing/make_slicer_figure.py [OUT.png]     # default Resources/Screenshots/MedSR_reformats.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = REPO_ROOT.parent / "shared" / "data" / "mr-volumes" / "t1_fl2d_sag_LPS.nii.gz"
DEFAULT_OUT = REPO_ROOT / "Resources" / "Screenshots" / "MedSR_reformats.png"
SCALE = 2
MODELS = ("bicubic", "mdrn")
SLAB = 3


def main(out: Path = DEFAULT_OUT) -> Path:
    sys.path[:0] = [str(REPO_ROOT / "tests"), str(REPO_ROOT)]
    import slicer_double

    MedSR = slicer_double.activate()
    slicer_double.reset()
    import slicer
    import torch
    from MedSRLib.geometry import ijk_to_ras_matrix
    from MedSRLib.intensity import IntensityMapping
    from MedSRLib.metrics import evaluate_pair
    from MedSRLib.panel import PanelData, render_panel
    from MedSRLib.resize import degrade
    from MedSRSlicerLib import nodes, selftest

    torch.set_num_threads(1)
    original = selftest.slabAlongSliceAxis(slicer.util.loadVolume(str(SOURCE)), SLAB, name="T1 sagittal")
    hr = nodes.volumeFromNode(original)  # (k, j, i) = (256, 256, 3); slice axis = numpy axis 2
    axis = selftest.sliceAxis(original)
    assert axis == 2, axis
    # LR volume: each sagittal (k, j) slice degraded x2; spacing x2 in-plane; origin at the LR voxel centre
    # whose x2 grid starts at the HR origin (MedSRLib's field-of-view-preserving grid), checked below
    lrArray = np.stack([degrade(hr.array[:, :, i].astype(np.float64), scale=SCALE) for i in range(hr.shape[2])], axis=2)
    inPlaneIJK = np.array([0.0, 1.0, 1.0])  # IJK axes j, k are in-plane (i = numpy axis 2 is the slice axis)
    lrSpacing = tuple(np.asarray(hr.spacing) * np.where(inPlaneIJK > 0, SCALE, 1))
    lrOrigin = tuple(hr.index_to_physical(inPlaneIJK * (SCALE - 1) / 2.0))
    lr = hr.with_array(np.round(lrArray).astype(hr.array.dtype), spacing=lrSpacing, origin=lrOrigin)
    lrNode = slicer.mrmlScene.AddNewNodeByClass(nodes.SCALAR_VOLUME_CLASS, "T1 sagittal LR")
    nodes.writeVolumeToNode(lr, lrNode)

    logic = MedSR.MedSRLogic()
    outputs = {}
    for model in MODELS:
        outputNode = logic.process(lrNode, model=model, scale=SCALE, axis=axis, check=False)
        np.testing.assert_allclose(nodes.ijkToRasArray(outputNode), ijk_to_ras_matrix(hr), atol=1e-4)  # same grid as HR
        outputs[model] = slicer.util.arrayFromVolume(outputNode)[:, :, SLAB // 2].astype(np.float64)

    # the sagittal reformat (k, j) of each node, flipped so that superior is up
    def reformat(array):
        return np.flipud(array)

    hrSlice = hr.array[:, :, SLAB // 2].astype(np.float64)
    mapping = IntensityMapping.fit(hrSlice[None], modality="MR")

    def unit(array):
        return np.clip(mapping.to_unit(reformat(array)[None])[0], 0.0, 1.0)

    hrUnit = unit(hrSlice)
    srUnits = {f"MedSR {model} x{SCALE}": unit(array) for model, array in outputs.items()}
    scores = {name: evaluate_pair(image, hrUnit, scale=SCALE, convention="basicsr") for name, image in srUnits.items()}
    data = PanelData(hr=hrUnit, lr=unit(lr.array[:, :, SLAB // 2].astype(np.float64)), scale=SCALE, convention="basicsr",
                     outputs=srUnits, scores=scores)
    figure = render_panel(data, title="MedSR in 3D Slicer (module logic on real MRML; drawn with MedSRLib.panel): "
                                      "sagittal T1 reformats, x2 in-plane")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out, optimize=True)
    for name, score in scores.items():
        print(f"{name}: PSNR {score['psnr']:.2f} dB, SSIM {score['ssim']:.4f}")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
