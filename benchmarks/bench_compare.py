"""What a user could pick instead, in the same run: per shipped network on real 512 x 512 CT slices,

* ``plain fp32``: a fresh process that imports only torch and the model code (not the engine, so no
  transparent huge pages, no allocator setting), loads the shipped weights and runs ``module(x)``
  per slice under ``torch.no_grad`` -- what a user's own script does;
* ``MedSR default``: a :class:`MedSRLib.engine.Predictor` with ``precision='auto'`` (what ``medsr run``
  uses; the precision that ran is printed) and ``MedSR fp32``;
* ``ONNX Runtime fp32``, ``OpenVINO fp32``, ``OpenVINO bf16`` (``INFERENCE_PRECISION_HINT=bf16``) on the
  same module exported to ONNX at the slice shape, where those packages are installed (the optional
  ``bench`` extra: ``pip install .[bench]``).

Times are the minimum over ``--rounds`` of seconds per slice (``--slices`` slices per round), every
mode at the same torch/runtime thread count. Errors are max |x - MedSR fp32| in HU (the CT window
[-1024, 3071] HU maps to [0, 1]). ``% of limit``: achieved GFLOP/s (2 x the network's MACs per slice /
time) over the machine limit at the precision that ran (best dense 3x3 channels_last convolution,
probed before and after). MedSR's two modes count the MACs their prepared network runs: DRIDSR, IDMAN, W2AMSN
and SRDA run their upsampler + tail as one folded LR convolution (``models.blocks.ShuffleTailFold``),
fewer MACs than the network's nominal count (shown as "(N run)" beside GFLOP/slice); the other modes run
the nominal network. Peak RSS per mode comes from its own process (MedSR's two modes share one).
Not a test: it prints markdown.

    python benchmarks/bench_compare.py                       # 5 shipped CPU networks (~10 min on 2 cores)
    python benchmarks/bench_compare.py --models dridsr:2 --slices 1 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (conv_limit, ct_slices, loadavg, machine, macs_removed_by_folds, md_table, peak_rss_mib, reset_peak_rss,
                     run_child)

SCRIPT = Path(__file__).resolve()
DEFAULT_MODELS = ("dridsr:2", "mdrn:2", "idman-small:2", "srda-small:4", "w2amsn-small:2")
HU_PER_UNIT = 4095.0


def _time(fn: Any, rounds: int, n: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


# ------------------------------------------------------------------------------------------ children


def child_plain(name: str, scale: int, n: int, rounds: int, out: str) -> dict[str, Any]:
    """A user's loop in a fresh process: no MedSRLib.engine import (so no THP, no allocator setting)."""
    import torch

    from MedSRLib.models import get_model

    slices = ct_slices(n)
    module = get_model(name).load(scale).eval()
    result = np.empty((n, scale * slices.shape[1], scale * slices.shape[2]), np.float32)

    def loop() -> None:
        with torch.no_grad():
            for i in range(n):
                result[i] = module(torch.from_numpy(slices[i])[None, None])[0, 0].numpy()

    with torch.no_grad():
        module(torch.from_numpy(slices[0])[None, None])  # warm-up
    reset_peak_rss()
    seconds = _time(loop, rounds, n)
    np.save(out, result)
    return {"s": seconds, "peak_mib": peak_rss_mib(), "engine_imported": "MedSRLib.engine" in sys.modules,
            "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}


def child_medsr(name: str, scale: int, n: int, rounds: int, out: str) -> dict[str, Any]:
    """MedSR's default (precision 'auto') and fp32, interleaved rounds."""
    from MedSRLib.engine import EngineOptions, Predictor

    slices = ct_slices(n)
    default = Predictor(name, scale, options=EngineOptions(device="cpu"))
    fp32 = default.with_options(EngineOptions(device="cpu", precision="fp32"))
    outs = {}
    for key, predictor in (("default", default), ("fp32", fp32)):
        predictor.run(slices[:1])  # warm-up (memory probe, oneDNN primitives)
    times: dict[str, float] = {"default": float("inf"), "fp32": float("inf")}
    peaks: dict[str, float] = {}
    for _ in range(rounds):
        for key, predictor in (("default", default), ("fp32", fp32)):
            reset_peak_rss()
            seconds, outs[key] = _timed_run(predictor, slices)
            times[key] = min(times[key], seconds / n)
            peaks[key] = max(peaks.get(key, 0.0), peak_rss_mib())
    for key, array in outs.items():
        np.save(f"{out}.{key}.npy", array)
    nominal = default.spec.macs_per_lr_pixel(scale) * slices.shape[1] * slices.shape[2]
    return {"s": times, "peak_mib": peaks, "precision": default.precision_ran, "macs_per_slice": nominal,
            "macs_run_per_slice": nominal - macs_removed_by_folds(default.module, slices.shape[1], slices.shape[2])}




def _timed_run(predictor: Any, slices: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = predictor.run(slices)
    return time.perf_counter() - start, result


def child_runtimes(name: str, scale: int, n: int, rounds: int, out: str, threads: int) -> dict[str, Any]:
    """The plain module exported to ONNX at the slice shape, run by ONNX Runtime and OpenVINO."""
    import torch

    from MedSRLib.models import get_model

    slices = ct_slices(n)
    module = get_model(name).load(scale).eval()
    onnx_path = os.path.join(tempfile.mkdtemp(prefix="medsr-bench-"), f"{name}_x{scale}.onnx")
    x0 = torch.from_numpy(slices[:1])[:, None]
    try:
        torch.onnx.export(module, (x0,), onnx_path, input_names=["x"], output_names=["y"], opset_version=17, dynamo=False)
    except Exception as exc:  # noqa: BLE001 -- report, do not fail the benchmark
        return {"error": f"ONNX export failed: {type(exc).__name__}: {str(exc)[:200]}"}
    runners: dict[str, Any] = {}
    errors: dict[str, str] = {}
    try:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        runners["ort_fp32"] = lambda x: session.run(None, {"x": x})[0]
    except Exception as exc:  # noqa: BLE001
        errors["ort_fp32"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    try:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(onnx_path)
        for key, hint in (("ov_fp32", "f32"), ("ov_bf16", "bf16")):
            compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                         "INFERENCE_NUM_THREADS": str(threads)})
            request = compiled.create_infer_request()
            runners[key] = (lambda r: (lambda x: next(iter(r.infer({0: x}).values()))))(request)
    except Exception as exc:  # noqa: BLE001
        errors["openvino"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    result: dict[str, Any] = {"s": {}, "peak_mib": {}, "errors": errors}
    for key, run in runners.items():
        array = np.empty((n, scale * slices.shape[1], scale * slices.shape[2]), np.float32)

        def loop(run: Any = run, array: np.ndarray = array) -> None:
            for i in range(n):
                array[i] = np.asarray(run(slices[i : i + 1, None]))[0, 0]

        loop()  # warm-up
        reset_peak_rss()
        result["s"][key] = _time(loop, rounds, n)
        result["peak_mib"][key] = peak_rss_mib()
        np.save(f"{out}.{key}.npy", array)
    return result


# ---------------------------------------------------------------------------------------------- parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS), help="name:scale items")
    parser.add_argument("--slices", type=int, default=2, help="512 x 512 CT slices per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="threads for every mode (default: all cores)")
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--child", nargs=6, metavar=("KIND", "MODEL", "SCALE", "N", "ROUNDS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.child:
        kind, name, scale, n, rounds, out = args.child
        import torch

        torch.set_num_threads(threads)
        if kind == "plain":
            row = child_plain(name, int(scale), int(n), int(rounds), out)
        elif kind == "medsr":
            row = child_medsr(name, int(scale), int(n), int(rounds), out)
        else:
            row = child_runtimes(name, int(scale), int(n), int(rounds), out, threads)
        print(json.dumps(row), flush=True)
        return 0

    import torch

    torch.set_num_threads(threads)
    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    started = time.perf_counter()
    limit_before = conv_limit()
    plain_env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    rows, notes = [], []
    tmp = Path(tempfile.mkdtemp(prefix="medsr-compare-"))
    results = {}
    for item in args.models:
        name, scale = item.split(":")[0], int(item.split(":")[1]) if ":" in item else 2
        common = [name, str(scale), str(args.slices), str(args.rounds)]
        out = str(tmp / f"{name}_x{scale}")
        extra = ["--threads", str(threads)]
        medsr = run_child(SCRIPT, ["--child", "medsr", *common, out, *extra])
        plain = _run_plain(["--child", "plain", *common, out + ".plain.npy", *extra], plain_env)
        runtimes = run_child(SCRIPT, ["--child", "runtimes", *common, out, *extra])
        print(json.dumps({"model": item, "medsr": medsr, "plain": plain, "runtimes": runtimes}), flush=True)
        results[item] = (name, scale, medsr, plain, runtimes, out)
    limit_after = conv_limit()
    limit = {k: max(limit_before[f"channels_last {k}"]["gflops"], limit_after[f"channels_last {k}"]["gflops"])
             for k in ("fp32", "bf16")}
    for item, (name, scale, medsr, plain, runtimes, out) in results.items():
        if "error" in medsr:
            notes.append(f"* {item}: MedSR child failed ({medsr['error']})")
            continue
        reference = np.load(f"{out}.fp32.npy").astype(np.float64)
        gflop = 2.0 * medsr["macs_per_slice"] / 1e9

        def err(key: str) -> str:
            path = Path(f"{out}.{key}.npy") if key != "plain" else Path(out + ".plain.npy")
            if not path.is_file():
                return "-"
            return f"{float(np.abs(np.load(path) - reference).max()) * HU_PER_UNIT:.1f}"

        gflop_run = 2.0 * medsr.get("macs_run_per_slice", medsr["macs_per_slice"]) / 1e9

        def pct(seconds: float, dtype: str, flop: float = gflop) -> str:
            return f"{100.0 * flop / seconds / limit[dtype]:.0f} %"

        ran = medsr["precision"]
        cells = {
            "plain": (plain.get("s"), plain.get("peak_mib"), "fp32"),
            "default": (medsr["s"]["default"], medsr["peak_mib"]["default"], ran),
            "fp32": (medsr["s"]["fp32"], medsr["peak_mib"]["fp32"], "fp32"),
        }
        for key in ("ort_fp32", "ov_fp32", "ov_bf16"):
            if key in runtimes.get("s", {}):
                cells[key] = (runtimes["s"][key], runtimes["peak_mib"][key], "bf16" if key.endswith("bf16") else "fp32")
        row = [name, f"x{scale}", f"{gflop:.0f}" + (f" ({gflop_run:.0f} run)" if gflop_run < gflop - 0.5 else ""), ran]
        for key in ("plain", "default", "fp32", "ort_fp32", "ov_fp32", "ov_bf16"):
            if key not in cells or cells[key][0] is None:
                row.append("-")
                continue
            seconds, peak, dtype = cells[key]
            flop = gflop_run if key in ("default", "fp32") else gflop  # MedSR runs its folded network
            row.append(f"{seconds:.2f} s ({pct(seconds, dtype, flop)}; {err(key)} HU; {peak:.0f} MiB)")
        default_s, ov_bf16 = cells["default"][0], cells.get("ov_bf16", (None,))[0]
        row.append(f"{default_s / ov_bf16:.2f}" if ov_bf16 else "-")
        row.append(f"{cells['plain'][0] / default_s:.2f}" if cells["plain"][0] else "-")
        rows.append(row)
        for key, message in runtimes.get("errors", {}).items():
            notes.append(f"* {item} {key}: {message}")
        if "error" in runtimes:
            notes.append(f"* {item}: {runtimes['error']}")
        if plain.get("engine_imported"):
            notes.append(f"* {item}: the plain child imported MedSRLib.engine (not a clean user script)")
    md = [
        f"CPU: {info['cpu']} ({info['cores']} cores, {info['isa']}); threads {threads} for every mode; torch "
        f"{info['torch']}; load average at start {info['loadavg_1min']}, at end {loadavg():.2f}. Machine limit "
        f"(best dense 3x3 conv, channels_last): fp32 {limit_before['channels_last fp32']['gflops']:.0f} -> "
        f"{limit_after['channels_last fp32']['gflops']:.0f} GFLOP/s, bf16 {limit_before['channels_last bf16']['gflops']:.0f} -> "
        f"{limit_after['channels_last bf16']['gflops']:.0f} GFLOP/s (before -> after; the larger is used). "
        f"{args.slices} real 512 x 512 CT slices per round, min of {args.rounds} rounds.",
        "",
        "Each cell: seconds per slice (% of the machine limit at that precision; max error vs MedSR fp32 in HU; peak RSS).",
        "",
        md_table(["model", "scale", "GFLOP/slice", "default ran", "plain fp32 loop (fresh process)", "MedSR default",
                  "MedSR fp32", "ONNX Runtime fp32", "OpenVINO fp32", "OpenVINO bf16",
                  "default / OpenVINO bf16 time", "plain / default time"], rows),
        "",
        *notes,
        f"\nTotal {time.perf_counter() - started:.0f} s.",
    ]
    text = "\n".join(md)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


def _run_plain(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    import subprocess

    proc = subprocess.run([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if proc.returncode == 0 and lines else {"error": f"exit {proc.returncode}"}


if __name__ == "__main__":
    sys.exit(main())
