"""Helpers shared by the benchmark scripts: real CT slices, memory readings, the convolution limit
probe, machine description, markdown tables and child processes. Not timed tests: scripts print numbers."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CT_DICOM = Path(os.environ.get("MEDSR_SHARED_DATA", REPO.parent / "shared" / "data")) / "totalseg-ct" / "example_ct_dicom"
MIB = float(1 << 20)


# ------------------------------------------------------------------------------------------- data


def ct_volume(n_slices: int | None = None) -> Any:
    """The TotalSegmentator example CT (512 x 512 x 20, int16 HU) as a Volume, tiled along z to ``n_slices``."""
    from MedSRLib.io import read_volume
    from MedSRLib.volume import Volume

    if not CT_DICOM.is_dir():
        raise SystemExit(f"needs the example CT at {CT_DICOM} (set MEDSR_SHARED_DATA)")
    volume = read_volume(str(CT_DICOM))
    if n_slices is None or n_slices == volume.array.shape[0]:
        return volume
    reps = -(-n_slices // volume.array.shape[0])
    array = np.ascontiguousarray(np.concatenate([volume.array] * reps, axis=0)[:n_slices])
    return Volume(array=array, spacing=volume.spacing, origin=volume.origin, direction=volume.direction,
                  modality="CT", metadata=dict(volume.metadata))


def ct_slices(n: int, side: int | None = None) -> np.ndarray:
    """``n`` real CT slices mapped to [0, 1] (the pipeline's CT window), float32 ``(n, s, s)``;
    ``side`` crops the centre (default: the whole 512 x 512)."""
    from MedSRLib.intensity import IntensityMapping

    volume = ct_volume(max(n, 1))
    array = volume.array[:n]
    if side is not None and side < array.shape[1]:
        y0, x0 = (array.shape[1] - side) // 2, (array.shape[2] - side) // 2
        array = array[:, y0 : y0 + side, x0 : x0 + side]
    mapping = IntensityMapping.fit(volume.array, modality="CT")
    return np.ascontiguousarray(mapping.to_unit(array), dtype=np.float32)


# ----------------------------------------------------------------------------------------- memory


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float:
    """Current resident set size in MiB."""
    kib = _status_kib("VmRSS")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux ``clear_refs`` 5); False where not supported."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size in MiB since the process start or the last :func:`reset_peak_rss`."""
    kib = _status_kib("VmHWM")
    return (kib if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024.0


# ------------------------------------------------------------------------------------------ probe


#: (channels, side) shapes of the machine-limit probe (all dense 3x3, batch 1).
PROBE_SHAPES: tuple[tuple[int, int], ...] = ((64, 128), (64, 256), (128, 128), (128, 256))


def conv_limit(shapes: Sequence[tuple[int, int]] = PROBE_SHAPES) -> dict[str, dict[str, Any]]:
    """Best dense 3x3 convolution GFLOP/s per ``'<format> <dtype>'`` over ``shapes`` (with the shape)."""
    from MedSRLib.engine import dense_conv_gflops

    result: dict[str, dict[str, Any]] = {}
    for fmt in ("NCHW", "channels_last"):
        for dtype in ("fp32", "bf16"):
            best = max(
                ((dense_conv_gflops(c, s, channels_last=fmt != "NCHW", bf16=dtype == "bf16"), (c, s)) for c, s in shapes)
            )
            result[f"{fmt} {dtype}"] = {"gflops": best[0], "shape": f"{best[1][0]} ch, {best[1][1]}^2"}
    return result


# ---------------------------------------------------------------------------------------- machine


def loadavg() -> float:
    """1-minute load average (other processes on the machine), NaN where unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine() -> dict[str, Any]:
    """CPU model, cores, torch version, CPU capability, threads, THP setting, load."""
    import torch

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
        flags = next((ln.split(":", 1)[1].split() for ln in lines if ln.startswith("flags")), [])
    except OSError:
        flags = []
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "isa": ",".join(f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "-",
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "loadavg_1min": round(loadavg(), 2),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ------------------------------------------------------------------------------------------ output


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (floats already formatted by the caller)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def emit(text: str, markdown: Path | None) -> int:
    """Print ``text`` and also write it to ``markdown`` when given; returns 0 (the exit status)."""
    print(text)
    if markdown:
        markdown.write_text(text + "\n")
    return 0


def run_child(script: Path, args: Sequence[str], *, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python script args`` and return the JSON object on its last stdout line (stderr passes through)."""
    proc = subprocess.run([sys.executable, str(script), *args], stdout=subprocess.PIPE, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "args": list(args)}
    return json.loads(lines[-1])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def macs_removed_by_folds(module: Any, h: int, w: int) -> int:
    """MACs per ``h x w`` slice that a prepared network's folds (:class:`MedSRLib.models.blocks.ShuffleTailFold`)
    do not run, measured on a 64 x 64 forward (each fold's input size scales with the slice)."""
    import torch

    from MedSRLib.models.blocks import ShuffleTailFold

    removed = 0

    def hook(fold: Any, inputs: Any, _out: Any) -> None:
        nonlocal removed
        removed += fold.macs_removed(*inputs[0].shape[-2:], *inputs[1:])

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, ShuffleTailFold)]
    try:
        with torch.inference_mode():
            module(torch.zeros(1, 1, 64, 64, device=next(module.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    return int(removed * h * w / (64 * 64))
