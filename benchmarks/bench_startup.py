"""Start-up: ``medsr models`` and the fixed cost of a ``medsr run`` (fresh processes, wall clock).

The fixed cost of a run is ``t(1 slice) - (t(k slices) - t(1 slice)) / (k - 1)``: everything that does
not grow with the slices (Python and torch import, model load, inference rewrites, the bf16 copy, the
memory probe -- cached per machine after the first run --, reading and writing). Each command runs
``--repeats`` times after one warm-up run (which also fills the memory-probe cache); the minimum is
reported. Not a test: it prints markdown.

    python benchmarks/bench_startup.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, ct_volume, loadavg, md_table


def _best(command: list[str], repeats: int) -> float:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)  # warm-up (page cache, probe cache)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="2")
    parser.add_argument("--slices", type=int, default=4, help="k of the fixed-cost fit")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    from MedSRLib.io import write_volume
    from MedSRLib.volume import Volume

    tmp = Path(tempfile.mkdtemp(prefix="medsr-startup-"))
    volume = ct_volume()
    paths = {}
    for k in (1, args.slices):
        v = Volume(array=volume.array[8 : 8 + k].copy(), spacing=volume.spacing, origin=volume.origin,
                   direction=volume.direction, modality="CT", metadata=dict(volume.metadata))
        paths[k] = tmp / f"ct{k}.nii.gz"
        write_volume(v, str(paths[k]))
    medsr = [sys.executable, "-m", "MedSRLib.cli"]
    models = _best([*medsr, "models"], args.repeats)
    runs = {k: _best([*medsr, "run", str(p), str(tmp / f"out{k}.nii.gz"), "--scale", "2", "--overwrite", "--quiet",
                      "--threads", args.threads], args.repeats) for k, p in paths.items()}
    k = args.slices
    per_slice = (runs[k] - runs[1]) / (k - 1)
    fixed = runs[1] - per_slice
    text = "\n".join([
        f"Threads {args.threads}; load average {loadavg():.2f}; CT default model (dridsr x2), 512 x 512 slices, "
        f".nii.gz in and out; minimum of {args.repeats} runs after a warm-up.",
        "",
        md_table(["command", "seconds"], [
            ["medsr models", f"{models:.2f}"],
            ["medsr run, 1 slice", f"{runs[1]:.2f}"],
            [f"medsr run, {k} slices", f"{runs[k]:.2f}"],
            ["per slice (fit)", f"{per_slice:.2f}"],
            ["fixed cost of a run (fit)", f"{fixed:.2f}"],
        ]),
        "",
        f"* `medsr models` < 2 s: {'met' if models < 2 else 'NOT met'}; fixed cost of a run < 3 s: {'met' if fixed < 3 else 'NOT met'}.",
    ])
    return emit(text, args.markdown)


if __name__ == "__main__":
    sys.exit(main())
