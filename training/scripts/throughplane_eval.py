"""Through-plane evaluation on ground truth (issue 20 item 6): near-isotropic volumes thickened with
the slice profile, super-resolved back, scored inside a foreground mask beside cubic B-spline and linear.

    python training/scripts/throughplane_eval.py (--weights FILE | --checkpoint RUN_DIR|FILE.pt)
        [--volumes V.nii.gz ...] [--mm 3 5 7] [--adapt SECONDS] [--finish-check] [--json OUT]

Default volumes: the two held out from training (isotropic-mr/seg3d-mr/MR.nii.gz,
isotropic-mr/sct-spine/t1w.nii.gz). The thickened axis is each volume's numpy axis of largest
spacing (ties: axis 0); factor = thickness / that spacing; Gaussian profile, FWHM = thickness,
sampled every thickness. ``--adapt S`` adds the network adapted for S seconds on the thick volume's own
in-plane slices. ``--finish-check`` adds the network run at r + 1 and finished down with the cubic
B-spline (the cost in dB of a finishing resample). One torch thread.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from MedSRLib.engine import Predictor  # noqa: E402
from MedSRLib.intensity import IntensityMapping  # noqa: E402
from MedSRLib.io import read_volume  # noqa: E402
from MedSRLib.models import get_model  # noqa: E402
from MedSRLib.throughplane import adapt_through_plane, evaluate_through_plane, super_resolve_through_plane  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
HELD_OUT = [DATA / "isotropic-mr" / "seg3d-mr" / "MR.nii.gz", DATA / "isotropic-mr" / "sct-spine" / "t1w.nii.gz"]


def load_net(args: argparse.Namespace) -> tuple[torch.nn.Module, str]:
    if args.weights:
        from MedSRLib.models.weights import read_card

        card = read_card(args.weights)
        spec = get_model(card["name"])
        return spec.load(spec.scales[-1], weights=args.weights), Path(args.weights).name
    from training.export import find_checkpoint
    from training.loop import read_checkpoint

    path = find_checkpoint(args.checkpoint)
    ckpt = read_checkpoint(path)
    spec = get_model(ckpt["model_name"])
    net = spec.build(int(ckpt["scale"]))
    net.load_state_dict(ckpt["model"])
    return net.eval(), f"{path} (iteration {ckpt['iteration']})"


def _spec_name(args: argparse.Namespace) -> str:
    """The registry name of the network given by --weights (its card) or --checkpoint."""
    if args.weights:
        from MedSRLib.models.weights import read_card

        return str(read_card(args.weights)["name"])
    from training.export import find_checkpoint
    from training.loop import read_checkpoint

    return str(read_checkpoint(find_checkpoint(args.checkpoint))["model_name"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights")
    src.add_argument("--checkpoint")
    p.add_argument("--volumes", nargs="+", default=[str(v) for v in HELD_OUT])
    p.add_argument("--mm", nargs="+", type=float, default=[5.0])
    p.add_argument("--adapt", type=float, default=0.0, help="seconds of per-volume adaptation (0: none)")
    p.add_argument("--finish-check", action="store_true")
    p.add_argument("--modality", default="MR", choices=("MR", "CT"), help="intensity mapping (CT: the CT window)")
    p.add_argument("--json")
    args = p.parse_args()
    torch.set_num_threads(1)
    net, what = load_net(args)
    spec = get_model(_spec_name(args))
    predictor = Predictor(spec, spec.scales[-1], module=copy.deepcopy(net))  # the one way to run a network
    rows = []
    print(f"network: {what}")
    print("| volume | axis | thickness mm | factor | B-spline PSNR/SSIM | linear | MedSR | gain dB | extra | s (net) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for path in args.volumes:
        v = read_volume(path)
        spacing = np.asarray(v.spacing, dtype=float)[::-1]  # numpy axis order
        axis = int(np.argmax(spacing)) if np.ptp(spacing) > 1e-3 else 0
        unit = np.clip(IntensityMapping.fit(v.array, modality=args.modality).to_unit(v.array), 0, 1).astype(np.float32)
        for mm in args.mm:
            factor = mm / spacing[axis]
            extra = {}
            if args.finish_check:
                r_up = int(np.ceil(factor - 1e-9)) + 1
                extra[f"net r={r_up}+finish"] = (lambda lr, n_out, r_up=r_up: super_resolve_through_plane(
                    lr, axis=axis, factor=n_out / lr.shape[axis], predictor=predictor, n_out=n_out, r=r_up))
            reports = {}
            if args.adapt > 0:
                def adapted(lr: np.ndarray, n_out: int, factor: float = factor) -> np.ndarray:
                    tuned, rep = adapt_through_plane(net, lr, axis=axis, factor=factor, seconds=args.adapt, seed=0)
                    reports["adapt"] = rep
                    return super_resolve_through_plane(lr, axis=axis, factor=factor, n_out=n_out,
                                                       predictor=Predictor(spec, spec.scales[-1], module=tuned))
                extra["adapted"] = adapted
            start = time.perf_counter()
            ev = evaluate_through_plane(unit, axis=axis, factor=factor, predictor=predictor, extra=extra)
            s = ev.scores
            fmt = lambda k: f"{s[k].psnr:.2f} / {s[k].ssim:.4f}"  # noqa: E731
            extras = "; ".join(f"{k}: {fmt(k)} ({ev.gain(k):+.2f} dB)" for k in extra)
            if "adapt" in reports:
                rep = reports["adapt"]
                extras += (f"; adapt {rep.seconds:.0f} s, {rep.iterations} it, held-back {rep.psnr_before:.2f} -> "
                           f"{rep.psnr_after:.2f} dB (B-spline {rep.bspline_psnr:.2f})")
            name = "/".join(Path(path).parts[-2:])
            print(f"| {name} | {axis} | {mm:g} | {factor:.2f} | {fmt('bspline3')} | {fmt('linear')} | {fmt('network')} | "
                  f"{ev.gain('network'):+.2f} | {extras} | {ev.seconds['network']:.1f} |", flush=True)
            rows.append({"volume": name, "axis": axis, "mm": mm, "factor": factor, "n_lr": ev.n_lr, "n_out": ev.n_out,
                         "scores": {k: {"psnr": v.psnr, "ssim": v.ssim} for k, v in s.items()},
                         "seconds": ev.seconds, "mask_fraction": ev.mask_fraction, "convention": ev.convention,
                         "total_s": time.perf_counter() - start})
    print(f"convention: {rows[0]['convention'] if rows else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"network": what, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
