"""Peak memory and time vs number of slices of a whole-volume run through ``MedSRLib.pipeline.super_resolve``.

Each run is a child process: the example CT (512 x 512 x 20, int16) tiled along z to n slices, then
``super_resolve(volume, model=..., scale=2, device='cpu')`` (networks with random weights where none
are shipped: speed and memory do not depend on the values). The child reports its resident memory
before the call and its peak during it (``/proc/self/status`` VmHWM, reset just before the call), so
the peak includes the Python + torch runtime and the resident input. Target of the fast-inference issue:
peak <= input + output + 1.5 GiB whatever n, and time linear in n (least-squares fit reported).

    python benchmarks/bench_memory.py                  # bicubic 20-141 slices, dridsr x2 5-20 (~2 min)
    python benchmarks/bench_memory.py --full           # dridsr x2 also at 80 and 141 slices (~+6 min)
    python benchmarks/bench_memory.py --model mdrn --counts 5 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import MIB, ct_volume, machine, md_table, peak_rss_mib, reset_peak_rss, rss_mib, run_child

SCRIPT = Path(__file__).resolve()
#: Allowed peak above input + output (the issue's target).
HEADROOM_MIB = 1.5 * 1024


def child(model: str, n: int, scale: int) -> dict[str, Any]:
    """One ``super_resolve`` run on an n-slice CT; memory and time."""
    import inspect

    import torch

    from MedSRLib import pipeline

    volume = ct_volume(n)
    import resource

    baseline = rss_mib()
    reset_peak_rss()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = pipeline.super_resolve(volume, model=model, scale=scale, device="cpu", allow_untrained=True)
    seconds = time.perf_counter() - start
    peak = peak_rss_mib()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    faults = cpu1.ru_minflt - faults
    system_share = (cpu1.ru_stime - cpu0.ru_stime) / max(1e-9, (cpu1.ru_stime - cpu0.ru_stime) + (cpu1.ru_utime - cpu0.ru_utime))
    return {
        "model": model, "n": n, "scale": scale, "seconds": seconds, "threads": torch.get_num_threads(),
        "input_mib": volume.array.nbytes / MIB, "output_mib": result.array.nbytes / MIB,
        "output_shape": list(result.array.shape), "output_dtype": str(result.array.dtype),
        "baseline_rss_mib": baseline, "peak_rss_mib": peak,
        "pipeline_prepares": "Predictor" in inspect.getsource(pipeline),
        "minor_faults_per_slice": faults / max(1, n), "kernel_cpu_share": system_share,
        "precision": (result.metadata.get("medsr") or {}).get("precision", "-"),
    }


def _linearity(rows: list[dict[str, Any]]) -> str:
    if len(rows) < 2:
        return "-"
    n = np.array([r["n"] for r in rows], float)
    t = np.array([r["seconds"] for r in rows], float)
    slope, intercept = np.polyfit(n, t, 1)
    fit = slope * n + intercept
    r2 = 1.0 - float(np.sum((t - fit) ** 2) / max(np.sum((t - t.mean()) ** 2), 1e-12))
    worst = float(np.max(np.abs(t - fit) / t)) * 100
    return (f"t = {intercept:.2f} s + {slope:.3f} s x n (R^2 = {r2:.4f}, largest deviation from the fit "
            f"{worst:.1f} %; s/slice from {min(t / n):.3f} to {max(t / n):.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dridsr", help="the network (default dridsr, the CT default network)")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--counts", type=int, nargs="*", default=None, help="slice counts for the network (5 10 20)")
    parser.add_argument("--bicubic-counts", type=int, nargs="*", default=[20, 40, 80, 141])
    parser.add_argument("--full", action="store_true", help="network counts 20 40 80 141")
    parser.add_argument("--threads", default="auto", help="torch threads: a number, 'default' or 'auto' (free cores)")
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "N", "SCALE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from MedSRLib.engine import free_cpu_count  # importing the engine also enables THP before big tensors

    if args.threads == "auto" and not args.child:
        args.threads = str(free_cpu_count(1.0))
    if args.threads not in ("auto", "default"):
        torch.set_num_threads(int(args.threads))
    if args.child:
        model, n, scale = args.child
        print(json.dumps(child(model, int(n), int(scale))), flush=True)
        return 0

    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    counts = args.counts or ([20, 40, 80, 141] if args.full else [5, 10, 20])
    runs = [("bicubic", n) for n in args.bicubic_counts] + [(args.model, n) for n in counts]
    results: dict[str, list[dict[str, Any]]] = {}
    for model, n in runs:
        row = run_child(SCRIPT, ["--child", model, str(n), str(args.scale), "--threads", str(args.threads)])
        print(json.dumps(row), flush=True)
        if "error" not in row:
            results.setdefault(model, []).append(row)
    table = []
    for model, rows in results.items():
        for r in rows:
            allowed = r["input_mib"] + r["output_mib"] + HEADROOM_MIB
            table.append([
                model, f"x{r['scale']}", f"512x512x{r['n']}", f"{r['input_mib']:.0f}", f"{r['output_mib']:.0f}",
                f"{r['baseline_rss_mib']:.0f}", f"{r['peak_rss_mib']:.0f}",
                f"{r['peak_rss_mib'] - r['input_mib'] - r['output_mib']:.0f}",
                f"{allowed:.0f} ({'met' if r['peak_rss_mib'] <= allowed else 'NOT met'})",
                f"{r['seconds']:.1f}", f"{r['seconds'] / r['n']:.3f}", r.get("precision", "-"),
                f"{r.get('minor_faults_per_slice', float('nan')):.0f}", f"{100 * r.get('kernel_cpu_share', float('nan')):.0f} %",
            ])
    md = [
        f"Threads {info['threads'] if args.threads in ('auto', 'default') else args.threads}; load average "
        f"{info['loadavg_1min']}; int16 CT in, int16 out; peak = whole-process VmHWM during the call "
        "(Python + torch runtime included). "
        + ("The pipeline runs a Predictor (inference rewrites applied)." if any(r.get("pipeline_prepares") for rs in results.values() for r in rs)
           else "The pipeline does not apply the inference rewrites."),
        "",
        md_table(["model", "scale", "volume", "input MiB", "output MiB", "RSS before MiB", "peak RSS MiB",
                  "peak - (in + out) MiB", "allowed (in + out + 1.5 GiB)", "seconds", "s/slice", "precision",
                  "page faults / slice", "kernel CPU"], table),
        "",
    ]
    md += [f"* time vs slices, {model}: {_linearity(rows)}" for model, rows in results.items()]
    text = "\n".join(md)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
