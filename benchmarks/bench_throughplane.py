"""Through-plane speed (issue 20 item 8): a real 35-slice 4.8 mm MR volume to ~1 mm, every view.

    python benchmarks/bench_throughplane.py [--threads 2] [--model tp-dridsr] [--weights FILE] [--views 2 4] [--ensemble]

Times every step on ../shared/data/mr-volumes/t1_fl2d_sag_RAS.nii.gz (256 x 256 x 35, 1.02 x 1.02 x
4.8 mm; thick axis = numpy axis 2): read, normalise (MedSRLib.intensity), the network on the 256 + 256
slices of 35 x 256 (x5, finished to 4.73x with the one-axis cubic B-spline) and, with 4 views, the
diagonal slices, fusion, back to input units; one row per ``--views`` value, in the same run (with
``--ensemble``, one more row per value with the flip self-ensemble: 4x the network's work). Prints a markdown table with the load average and the dense-conv probe (GFLOP/s of the best
3x3 convolution, :func:`MedSRLib.engine.dense_conv_gflops`) measured just before, so that a run on
a busy machine can be told from a slow network. Untrained weights time the same as trained ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from MedSRLib.engine import EngineOptions, Predictor, dense_conv_gflops  # noqa: E402
from MedSRLib.intensity import IntensityMapping  # noqa: E402
from MedSRLib.io import read_volume  # noqa: E402
from MedSRLib.models import count_macs, get_model  # noqa: E402
from MedSRLib.throughplane import output_length, super_resolve_through_plane, view_columns  # noqa: E402

VOLUME = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mr-volumes" / "t1_fl2d_sag_RAS.nii.gz"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="tp-dridsr")
    p.add_argument("--weights", help="weights file (default: shipped, else untrained)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--views", type=int, nargs="+", default=[2, 4], choices=[2, 4], help="views fused (one row each)")
    p.add_argument("--ensemble", action="store_true", help="also a row per --views value with the flip self-ensemble")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    probe = dense_conv_gflops(64, 64)
    t0 = time.perf_counter()
    volume = read_volume(VOLUME)
    t_read = time.perf_counter() - t0
    axis = int(np.argmax(np.asarray(volume.spacing)[::-1]))  # numpy axis of the largest spacing
    spacing = np.asarray(volume.spacing)[::-1]
    fine = float(np.min(np.delete(spacing, axis)))
    factor = float(spacing[axis] / fine)
    t0 = time.perf_counter()
    mapping = IntensityMapping.fit(volume.array, modality="MR")
    unit = mapping.to_unit(volume.array)
    t_norm = time.perf_counter() - t0
    spec = get_model(args.model)
    options = EngineOptions(batch_size=args.batch, channels_last=args.channels_last, threads=args.threads)
    predictor = Predictor(spec, spec.scales[-1], weights=args.weights, allow_untrained=True, options=options)
    net = predictor.module
    n = unit.shape[axis]
    n_out = output_length(n, factor)
    r = int(np.ceil(n_out / n - 1e-9))
    other = [unit.shape[a] for a in range(3) if a != axis]
    macs2 = sum(count_macs(net, (n, w)) * c for w, c in ((other[1], other[0]), (other[0], other[1])))  # x8 tail: upper bound
    print("| model | views | ensemble | threads | load avg (1 min) | dense-conv probe GFLOP/s | volume | factor | r | slice columns | GMAC | "
          "network GFLOP/s | read s | normalise s | network+fusion s | back s | total s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    runs = [(views, False) for views in args.views] + ([(views, True) for views in args.views] if args.ensemble else [])
    for views, ensemble in runs:
        columns = view_columns(other[0], other[1], views=views)
        macs = macs2 * columns / (2 * other[0] * other[1]) * (4 if ensemble else 1)  # MACs grow with the slice width
        run_with = predictor.with_options(dataclasses.replace(options, ensemble=True)) if ensemble else predictor
        t0 = time.perf_counter()
        out = super_resolve_through_plane(unit, axis=axis, factor=factor, predictor=run_with, views=views)
        t_net = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = mapping.from_unit(out, dtype=volume.array.dtype)
        t_back = time.perf_counter() - t0
        total = t_read + t_norm + t_net + t_back
        print(f"| {spec.name} | {views} | {'yes' if ensemble else 'no'} | {args.threads} | {load:.1f} | {probe:.0f} | {unit.shape} thick axis {axis} | "
              f"{factor:.2f} | {r} | {columns} | {macs / 1e9:.0f} | {2 * macs / 1e9 / t_net:.0f} | {t_read:.2f} | "
              f"{t_norm:.2f} | {t_net:.1f} | {t_back:.2f} | {total:.1f} |")
    print(f"output {result.shape} {result.dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
