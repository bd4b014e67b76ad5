"""Slice streams: one stream on every thread vs ``k`` concurrent streams (threads of one process, one
``Predictor``, ``threads // k`` torch threads each; ``MEDSR_CPU_STREAMS``), on real 512 x 512 CT slices
through ``Predictor.run`` (the path ``medsr run`` takes). Interleaved rounds, minimum seconds per slice;
peak RSS per mode. Not a test: it prints markdown.

    python benchmarks/bench_workers.py --models dridsr:2 mdrn:2 --slices 6 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import emit, ct_slices, loadavg, md_table, peak_rss_mib, reset_peak_rss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["dridsr:2", "mdrn:2"])
    parser.add_argument("--slices", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    import torch

    from MedSRLib.engine import EngineOptions, Predictor
    from MedSRLib.engine.runner import CPU_STREAMS_ENV

    torch.set_num_threads(args.threads)
    slices = ct_slices(args.slices)
    rows = []
    for item in args.models:
        name, scale = item.split(":")[0], int(item.split(":")[1])
        predictor = Predictor(name, scale, options=EngineOptions(device="cpu", threads=args.threads))
        predictor.run(slices[:1])
        modes = {f"1 stream x {args.threads} threads": "1", f"{args.threads} streams x 1 thread": str(args.threads)}
        best = {k: float("inf") for k in modes}
        peaks = {k: 0.0 for k in modes}
        for _ in range(args.rounds):
            for key, streams in modes.items():
                os.environ[CPU_STREAMS_ENV] = streams
                reset_peak_rss()
                start = time.perf_counter()
                predictor.run(slices)
                best[key] = min(best[key], (time.perf_counter() - start) / args.slices)
                peaks[key] = max(peaks[key], peak_rss_mib())
        os.environ.pop(CPU_STREAMS_ENV, None)
        (one, many) = modes
        rows.append([item, predictor.precision_ran, *(f"{best[k]:.3f} s ({peaks[k]:.0f} MiB)" for k in modes),
                     f"{best[one] / best[many]:.2f}"])
    text = "\n".join([
        f"Threads {args.threads}; {args.slices} real 512 x 512 CT slices per run, min of {args.rounds} rounds; "
        f"load average {loadavg():.2f}.", "",
        md_table(["model", "precision", *modes, "throughput gain of the streams"], rows),
    ])
    return emit(text, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
