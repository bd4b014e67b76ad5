"""Network speed on CT slices: MedSR's fast path vs a plain per-slice loop, against the machine limit.

For each selected model (registry name, scale) a child process loads it with seeded weights (the
shipped trained weights where they exist, random otherwise; speed does not depend on the values),
reads real 512 x 512 CT slices (centre crops for the heavy paper configurations) and times, in
interleaved rounds (min over rounds):

* ``plain``: one slice at a time, fp32, NCHW, ``torch.no_grad``, the module as loaded (weight norm
  live), no batching -- what a straightforward script does (in the same process, so it also gets the
  engine's transparent huge pages: a stricter reference than a fresh script);
* ``fast`` (fp32): a :class:`MedSRLib.engine.Predictor` (the model's inference rewrites applied)
  with ``precision='fp32'`` (channels_last, inference_mode, batch
  from the memory budget, transparent huge pages);
* ``bf16``: the same with ``precision='bf16'`` (autocast; image path kept in fp32), with its error
  against the fp32 output;
* ``default``: what the pipeline runs when nobody chooses: ``precision='auto'``, i.e. bf16 on CPUs
  where ``MedSRLib.engine.resolve_precision('auto', cpu)`` picks it, fp16 on CUDA, else fp32; the targets
  are checked on it, its GFLOP/s against the machine limit at the same precision;
* ``compile`` (``--compile``): ``EngineOptions(compile=True)``, first run (with compilation) and steady.

Everything in one invocation uses the same torch thread count (``--threads``; default: the cores
other processes leave free, so a background job does not turn every OpenMP barrier into a wait).
The parent also probes the machine limit (best dense 3x3 convolution GFLOP/s, NCHW and
channels_last, fp32 and bf16) before and after the networks and prints markdown tables. With a CUDA
GPU the same measurements run on it (fp16 autocast = the engine's 'auto'); otherwise it says so.

    python benchmarks/bench_networks.py                 # default selection, ~5 min on 2 cores
    python benchmarks/bench_networks.py --full          # every registered network and scale
    python benchmarks/bench_networks.py --models mdrn:2 dridsr:4 --compile --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (conv_limit, ct_slices, loadavg, machine, macs_removed_by_folds, md_table, peak_rss_mib, reset_peak_rss,
                     run_child)

SCRIPT = Path(__file__).resolve()
#: Default selection: the lightweight configurations on whole 512 x 512 slices, the paper ones on crops.
DEFAULT_MODELS = ("dridsr:2", "dridsr:4", "idman-small:2", "w2amsn-small:2", "srda-small:4", "mdrn:2",
                  "idman:2", "w2amsn-s:2", "w2amsn:2", "srda:4")
#: Networks above this many MACs per LR pixel run on ``--crop`` crops (a 512^2 slice takes minutes).
HEAVY_MACS_PER_PIXEL = 2.0e6
#: "Convolution-heavy" (the 60 %-of-limit target applies): at least this share of the MACs is in dense
#: (groups = 1) convolutions with kernels of 3 x 3 or more and at least 64 input and output channels,
#: the kind of layer the machine-limit probe times (64 and 128 channels); narrower layers cannot reach
#: that limit (a 32-channel 3x3 convolution runs at ~75 % of it here).
DENSE_SHARE_HEAVY = 0.75
#: The targets of the fast-inference issue.
TARGET_SPEEDUP, TARGET_LIMIT_FRACTION = 1.5, 0.60


# ------------------------------------------------------------------------------------------ child


def _plain_loop(module: Any, slices: np.ndarray, out: np.ndarray, device: Any) -> None:
    import torch

    with torch.no_grad():
        for i in range(len(slices)):
            x = torch.from_numpy(slices[i])[None, None].to(device)
            out[i] = module(x)[0, 0].float().cpu().numpy()


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def measure(name: str, scale: int, side: int, n: int, rounds: int, device_name: str, compile_: bool) -> dict[str, Any]:
    """Time plain / fast / bf16 (/ fp16 on CUDA, / compile) on ``n`` CT slices of ``side`` px."""
    import torch

    from MedSRLib.engine import EngineOptions, Predictor, resolve_device
    from MedSRLib.models import get_model

    device = resolve_device(device_name)
    spec = get_model(name)
    torch.manual_seed(0)
    plain = spec.load(scale, allow_untrained=True).to(device)
    fast_module = spec.load(scale, allow_untrained=True)
    fast_module.load_state_dict(plain.state_dict())
    fast = Predictor(spec, scale, module=fast_module, options=EngineOptions(device=device, precision="fp32"))

    def run_slices(_module: Any, x: Any, *, scale: int, options: Any, out: Any = None, min_lr_size: int = 1) -> Any:
        return fast.with_options(options).run(x, out=out)
    slices = ct_slices(n, side)
    shape = (n, scale * slices.shape[1], scale * slices.shape[2])
    outs = {k: np.empty(shape, np.float32) for k in ("plain", "fast", "bf16", "fp16", "compile")}
    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    modes = {
        "plain": lambda: _plain_loop(plain, slices, outs["plain"], device),
        "fast": lambda: run_slices(fast, slices, scale=scale, out=outs["fast"],
                                   options=EngineOptions(device=device, precision="fp32"), min_lr_size=spec.min_lr_size),
        "bf16": lambda: run_slices(fast, slices, scale=scale, out=outs["bf16"],
                                   options=EngineOptions(device=device, precision="bf16"), min_lr_size=spec.min_lr_size),
    }
    if cuda:
        modes["fp16"] = lambda: run_slices(fast, slices, scale=scale, out=outs["fp16"],
                                           options=EngineOptions(device=device, precision="auto"),
                                           min_lr_size=spec.min_lr_size)
    warm = slices[:1]
    _plain_loop(plain, warm, np.empty((1, *shape[1:]), np.float32), device)
    for key in modes:  # warm-up: oneDNN primitives, the engine's memory probe
        if key != "plain":
            precision = {"fast": "fp32", "bf16": "bf16", "fp16": "auto"}[key]
            run_slices(fast, warm, scale=scale, options=EngineOptions(device=device, precision=precision),
                       min_lr_size=spec.min_lr_size)
    times: dict[str, list[float]] = {k: [] for k in modes}
    peaks: dict[str, float] = {k: 0.0 for k in modes}
    for _ in range(rounds):
        for key, fn in modes.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            reset_peak_rss()
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[key].append((time.perf_counter() - start) / n)
            peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mib()
            peaks[key] = max(peaks[key], peak)
    from MedSRLib.engine import resolve_precision
    from MedSRLib.models.base import count_macs

    def dense(m: Any) -> bool:
        return (isinstance(m, torch.nn.Conv2d) and m.groups == 1 and min(m.kernel_size) >= 3
                and min(m.in_channels, m.out_channels) >= 64)

    side_probe = max(32, spec.min_lr_size)
    dense_share = count_macs(plain, (side_probe, side_probe), device=device, where=dense) / max(
        1, count_macs(plain, (side_probe, side_probe), device=device))
    default = "fp16" if cuda else ("bf16" if resolve_precision("auto", torch.device("cpu")) == "bf16" else "fast")
    result: dict[str, Any] = {
        "model": name, "scale": scale, "side": int(slices.shape[1]), "n": n, "rounds": rounds,
        "default_mode": default, "dense_share": dense_share,
        "device": str(device), "threads": torch.get_num_threads(),
        "weights": "trained" if spec.has_weights(scale) else "random",
        "gmacs_per_slice": spec.macs_per_lr_pixel(scale) * slices.shape[1] * slices.shape[2] / 1e9,
        "gmacs_run_per_slice": (spec.macs_per_lr_pixel(scale) * slices.shape[1] * slices.shape[2]
                                - macs_removed_by_folds(fast.module, slices.shape[1], slices.shape[2])) / 1e9,
        "s_per_slice": {k: min(v) for k, v in times.items()},
        "s_per_slice_all": times,
        "peak_mib": peaks,
        "io_mib": (slices.nbytes + outs["fast"].nbytes) / 2**20,
        "loadavg_end": loadavg(),
    }
    for key in ("bf16", "fp16"):
        if key in modes:
            result[f"{key}_max_abs_err"] = float(np.abs(outs[key] - outs["fast"]).max())
            result[f"{key}_psnr_db"] = _psnr(outs[key], outs["fast"])
    result["fast_vs_plain_max_abs_err"] = float(np.abs(outs["fast"] - outs["plain"]).max())
    if compile_:
        options = EngineOptions(device=device, precision="fp32", compile=True)
        sync()
        start = time.perf_counter()
        run_slices(fast, slices, scale=scale, out=outs["compile"], options=options, min_lr_size=spec.min_lr_size)
        sync()
        result["compile_first_s"] = time.perf_counter() - start
        steady = []
        for _ in range(rounds):
            sync()
            start = time.perf_counter()
            run_slices(fast, slices, scale=scale, out=outs["compile"], options=options, min_lr_size=spec.min_lr_size)
            sync()
            steady.append((time.perf_counter() - start) / n)
        result["s_per_slice"]["compile"] = min(steady)
        result["compile_max_abs_err"] = float(np.abs(outs["compile"] - outs["fast"]).max())
    return result


# ----------------------------------------------------------------------------------------- parent


def _selection(args: argparse.Namespace) -> list[tuple[str, int]]:
    from MedSRLib.models import list_models

    if args.full:
        return [(s.name, sc) for s in list_models() if s.learned for sc in s.scales]
    items = args.models or list(DEFAULT_MODELS)
    return [(item.split(":")[0], int(item.split(":")[1]) if ":" in item else 2) for item in items]


def _fmt(value: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _tables(rows: list[dict[str, Any]], limits: dict[str, Any], info: dict[str, Any], device: str) -> str:
    limit32 = limits.get("channels_last fp32", {}).get("gflops", float("nan"))
    limit16 = limits.get("channels_last bf16", {}).get("gflops", float("nan"))
    limit_of = {"fast": limit32, "bf16": limit16}  # CUDA: no probe, the limit columns read '-'
    label = {"fast": "fp32", "bf16": "bf16", "fp16": "fp16"}
    speed, extra, checks = [], [], []
    for r in rows:
        if "error" in r:
            speed.append([" ".join(r["args"][:2]), "error: " + r["error"]] + [""] * 13)
            continue
        t = r["s_per_slice"]
        flops = 2e9 * r["gmacs_per_slice"]
        flops_run = 2e9 * r.get("gmacs_run_per_slice", r["gmacs_per_slice"])  # MedSR's folded network
        mode = r.get("default_mode", "fast")
        default_gflops = flops_run / t[mode] / 1e9
        limit = limit_of.get(mode, float("nan"))
        frac = default_gflops / limit
        heavy = r.get("dense_share", 0.0) >= DENSE_SHARE_HEAVY
        per_512 = (512 * 512) / (r["side"] ** 2)
        speedup = t["plain"] / t[mode]
        speed.append([
            r["model"], f"x{r['scale']}", r["weights"], f"{r['side']}^2" + ("" if r["side"] == 512 else " crop"),
            _fmt(r["gmacs_per_slice"], 1), f"{100 * r.get('dense_share', float('nan')):.0f} %",
            _fmt(t["plain"], 3), _fmt(t["fast"], 3), _fmt(t["plain"] / t["fast"]), _fmt(flops_run / t["fast"] / 1e9, 0),
            label[mode], _fmt(t[mode], 3), _fmt(speedup), _fmt(default_gflops, 0),
            "-" if math.isnan(frac) else f"{100 * frac:.0f} %",
            _fmt(t[mode] * per_512, 1) + ("" if per_512 == 1 else " (extrap.)"),
        ])
        err_key = "bf16" if "bf16" in t else "fp16"
        extra.append([
            r["model"], f"x{r['scale']}", _fmt(r.get(f"{err_key}_max_abs_err", float("nan")), 4),
            _fmt(r.get(f"{err_key}_psnr_db", float("nan")), 1), _fmt(r["fast_vs_plain_max_abs_err"] * 1e6, 2),
            _fmt(r["peak_mib"]["plain"], 0), _fmt(r["peak_mib"]["fast"], 0), _fmt(r["peak_mib"].get(mode, float("nan")), 0),
            _fmt(r["io_mib"], 0),
            _fmt(t.get("compile", float("nan")), 3) + (f" ({_fmt(r['compile_first_s'], 0)} s first)" if "compile" in t else ""),
            _fmt(r["loadavg_end"]),
        ])
        ok_speed = speedup >= TARGET_SPEEDUP
        limit_cell = (f"{100 * frac:.0f} % {'met' if frac >= TARGET_LIMIT_FRACTION else 'NOT met'}" if heavy
                      else f"n/a ({100 * r.get('dense_share', 0):.0f} % dense-conv MACs)")
        checks.append([r["model"], f"x{r['scale']}", label[mode], f"{_fmt(speedup)} {'met' if ok_speed else 'NOT met'}", limit_cell])
    unit = "GPU MiB (max allocated)" if device.startswith("cuda") else "RSS MiB"
    parts = [
        f"Threads: {info['threads']}; load average at start {info['loadavg_1min']} (other jobs share the cores); "
        f"machine limit used: channels_last fp32 {limit32:.0f} GFLOP/s, bf16 {limit16:.0f} GFLOP/s. "
        "'default' is what `medsr run` / `super_resolve` use when no precision is chosen (`precision='auto'`).",
        "",
        md_table(["model", "scale", "weights", "LR slice", "GMAC/slice", "dense-conv MACs", "plain s/slice",
                  "fp32 fast s/slice", "fp32 fast vs plain", "fp32 fast GFLOP/s", "default", "default s/slice",
                  "default vs plain", "default GFLOP/s", "% of limit (same precision)", "default s per 512^2 slice"], speed),
        "",
        md_table(["model", "scale", f"{'bf16' if device == 'cpu' else 'fp16'} max abs err vs fp32",
                  f"{'bf16' if device == 'cpu' else 'fp16'} PSNR vs fp32 (dB)", "fp32 fast - plain max abs err (1e-6)",
                  f"peak {unit} plain", f"peak {unit} fp32 fast", f"peak {unit} default", "in+out MiB", "compile s/slice",
                  "load avg"], extra),
        "",
        md_table(["model", "scale", "default precision", f"default >= {TARGET_SPEEDUP}x plain",
                  f"conv-heavy (>= {100 * DENSE_SHARE_HEAVY:.0f} % dense-conv MACs): >= {100 * TARGET_LIMIT_FRACTION:.0f} % of limit"],
                 checks),
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", help="name:scale items (default: %s)" % " ".join(DEFAULT_MODELS))
    parser.add_argument("--full", action="store_true", help="every registered network at every scale")
    parser.add_argument("--slices", type=int, default=None, help="slices per timed run (default 1 at 512^2, 2 on crops)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the minimum is reported")
    parser.add_argument("--crop", type=int, default=96, help="LR crop side for networks above 2 MMAC per LR pixel")
    parser.add_argument("--threads", default="auto",
                        help="torch threads for everything: a number, 'default' (torch's) or 'auto' (default: the "
                             "cores other processes leave free, measured once at start)")
    parser.add_argument("--compile", action="store_true", help="also time EngineOptions(compile=True)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda; a present GPU is measured as well")
    parser.add_argument("--markdown", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="write the raw results here")
    parser.add_argument("--child", nargs=6, metavar=("NAME", "SCALE", "SIDE", "N", "ROUNDS", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    from MedSRLib.engine import free_cpu_count  # importing the engine also enables THP before big tensors

    if args.threads == "auto":
        args.threads = str(free_cpu_count(1.0)) if not args.child else None
    if args.threads not in (None, "default"):
        torch.set_num_threads(int(args.threads))
    if args.child:
        name, scale, side, n, rounds, device = args.child
        print(json.dumps(measure(name, int(scale), int(side), int(n), int(rounds), device, args.compile)), flush=True)
        return 0

    from MedSRLib.models import get_model

    info = machine()
    print(f"machine: {json.dumps(info)}", flush=True)
    started = time.perf_counter()
    limits_before = conv_limit()
    print(f"conv limit (before): {json.dumps(limits_before)}", flush=True)
    devices = [args.device]
    if args.device == "cpu" and torch.cuda.is_available():
        devices.append("cuda")
    results: dict[str, list[dict[str, Any]]] = {d: [] for d in devices}
    for device in devices:
        for name, scale in _selection(args):
            spec = get_model(name)
            heavy = spec.macs_per_lr_pixel(scale) >= HEAVY_MACS_PER_PIXEL and device == "cpu"
            side = args.crop if heavy else 512
            n = args.slices or (2 if heavy else 1) * (8 if device == "cuda" else 1)
            child = ["--child", name, str(scale), str(side), str(n), str(args.rounds), device]
            child += ["--compile"] if args.compile else []
            child += ["--threads", str(args.threads)]
            row = run_child(SCRIPT, child)
            results[device].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "s_per_slice_all"}), flush=True)
    limits_after = conv_limit()
    print(f"conv limit (after): {json.dumps(limits_after)}", flush=True)
    limits = {k: max((limits_before[k], limits_after[k]), key=lambda v: v["gflops"]) for k in limits_before}
    elapsed = time.perf_counter() - started

    md = ["### Machine limit: best dense 3x3 convolution (batch 1; probed before and after the networks)", "",
          md_table(["format", "dtype", "GFLOP/s before", "GFLOP/s after", "best shape"],
                   [[k.split()[0], k.split()[1], f"{limits_before[k]['gflops']:.0f}", f"{limits_after[k]['gflops']:.0f}",
                     limits[k]["shape"]] for k in limits]), ""]
    for device in devices:
        md += [f"### Networks on {device}", "", _tables(results[device], limits, info, device), ""]
    if not torch.cuda.is_available():
        md += ["### GPU", "", "No GPU found (torch.cuda.is_available() is False): GPU rows not measured. "
               "On a CUDA machine this script measures the same code path (fp16 autocast) as well.", ""]
    md.append(f"Total benchmark time {elapsed:.0f} s.")
    text = "\n".join(md)
    print("\n" + text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "limits": limits, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
