"""``python -m training`` / ``medsr-train``: train, evaluate, export, and the CPU weight-making queue.

    medsr-train train CONFIG [--iterations N] [--batch B] [--time-budget 25m] [--data-root DIR]
                             [--name RUN] [--log-root DIR] [--set key.sub=value ...] [--fresh]
    torchrun --nproc_per_node 2 -m training train CONFIG ...     (DDP; gloo on CPU, nccl on CUDA)
    medsr-train evaluate CONFIG (--weights FILE | --checkpoint FILE|RUN_DIR) [--split test] [--out FILE]
    medsr-train export CHECKPOINT|RUN_DIR [--out FILE|DIR] [--split val]
    medsr-train queue CONFIG [CONFIG ...] [--log-root DIR] [--no-export]
    medsr-train results [--out training/RESULTS.md]      (every shipped weights file, paper tables)
    medsr-train configs

CONFIG is a name in ``training/configs/`` (``dridsr_x4``, ``mdrn_x2_cpu``) or a YAML path. User
mistakes print ``medsr-train: error: <one line>`` and exit with status 2 before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from MedSRLib.errors import MedSRError

from .config import available_configs, load_config, parse_set


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for flag, key in (("iterations", "train.iterations"), ("batch", "train.batch"), ("time_budget", "train.time_budget"),
                      ("data_root", "data.root"), ("name", "name"), ("log_root", "log.root")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "iterations", None) is not None:
        overrides["train.epochs"] = None
    overrides.update(parse_set(getattr(args, "set", None)))
    return load_config(args.config, overrides=overrides)


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="config name in training/configs (e.g. dridsr_x4_cpu) or a YAML file")
    p.add_argument("--data-root", help="folder of the training data (overrides data.root)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config key, e.g. val.every=100")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medsr-train", description="Train, evaluate and export MedSR networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a config (resumes from <log-root>/<name>/last.pt)")
    _add_overrides(tr)
    tr.add_argument("--iterations", type=int, help="total iterations (replaces the config's iterations/epochs)")
    tr.add_argument("--batch", type=int, help="global batch size (split over torchrun processes)")
    tr.add_argument("--time-budget", help="stop and checkpoint after this long (seconds, or 25m, 2h)")
    tr.add_argument("--name", help="run name (folder under the log root; default: the config name)")
    tr.add_argument("--log-root", help="folder of run folders (default runs/)")
    tr.add_argument("--fresh", action="store_true", help="start over instead of resuming from last.pt")
    tr.add_argument("--stop-at", type=int, help="end this session at this iteration (checkpointed; rerun to continue)")
    tr.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")

    ev = sub.add_parser("evaluate", help="a paper's test protocol, as a markdown table beside the published numbers")
    _add_overrides(ev)
    src = ev.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="a .safetensors weights file (with its JSON card)")
    src.add_argument("--checkpoint", help="a training checkpoint (.pt) or run folder (best.pt)")
    ev.add_argument("--split", default="test", choices=("train", "val", "test"))
    ev.add_argument("--paper", help="published table in training/published.yaml (default: the config's)")
    ev.add_argument("--max-images", type=int, help="first N images of the split")
    ev.add_argument("--out", help="append the markdown table to this file (e.g. training/RESULTS.md)")

    ex = sub.add_parser("export", help="checkpoint -> MedSRLib/weights/<name>_x<scale>.safetensors + card")
    ex.add_argument("checkpoint", help="a training checkpoint (.pt) or run folder (best.pt, else last.pt)")
    ex.add_argument("--out", help="weights file or folder (default MedSRLib/weights/)")
    ex.add_argument("--split", default="val", choices=("train", "val", "test"), help="split scored for the card")
    ex.add_argument("--max-images", type=int)
    ex.add_argument("--data-root", help="data folder, when it moved since training")

    qu = sub.add_parser("queue", help="train configs one after another (resumable), exporting each finished run")
    qu.add_argument("configs", nargs="+", help="config names, in order")
    qu.add_argument("--log-root", help="folder of run folders (default runs/)")
    qu.add_argument("--out", help="weights folder (default MedSRLib/weights/)")
    qu.add_argument("--no-export", action="store_true")

    rs = sub.add_parser("results", help="training/RESULTS.md: every shipped model on the papers' test protocols (training/tables.yaml)")
    rs.add_argument("--out", default=str(Path(__file__).resolve().parent / "RESULTS.md"), help="markdown file written")
    rs.add_argument("--split", choices=("val", "test"), help="split of every table (default: each table's, the test split)")
    rs.add_argument("--max-images", type=int, help="first N images of each split (a quick partial run)")
    rs.add_argument("--diagnosis", default="runs/diagnosis", help="folder of `diagnosis` results to include (SRDA Table III)")

    dg = sub.add_parser("diagnosis", help="SRDA Table III: accuracy of a ResNet-50 trained on LR, bicubic and SR images")
    dg.add_argument("--kinds", nargs="+", default=["lr", "bicubic", "srda-small", "hr"],
                    help="inputs: lr, bicubic, hr or a model name with shipped x4 weights (default: lr bicubic srda-small hr)")
    dg.add_argument("--config", default="srda_x4_cpu", help="config whose data section and scale are used")
    dg.add_argument("--out", default="runs/diagnosis", help="run folder (resumable: finished kinds are skipped)")
    dg.add_argument("--width", type=float, default=0.25, help="ResNet-50 channel multiplier (1 = full width)")
    dg.add_argument("--epochs", type=int, default=10)
    dg.add_argument("--batch", type=int, default=32)
    dg.add_argument("--lr", type=float, default=1.0e-3)
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--threads", type=int, default=1)
    dg.add_argument("--fp32", action="store_true", help="train in fp32 instead of bf16 autocast")

    sub.add_parser("configs", help="list the shipped configs")
    return parser


def _train(args: argparse.Namespace) -> int:
    from .modes import train

    result = train(_config_from_args(args), resume=not args.fresh, progress=False if args.no_progress else None,
                   stop_at=args.stop_at)
    best = result.best
    if best:
        print(f"best: iteration {best['iteration']}, PSNR {best['psnr']:.3f} dB / SSIM {best['ssim']:.4f} "
              f"(bicubic {best['bicubic_psnr']:.3f} / {best['bicubic_ssim']:.4f}, {best['convention']})")
    print(f"{result.iteration}/{result.planned_iterations} iterations, {result.elapsed_s / 60:.1f} min; {result.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .config import validate
    from .evaluate import paper_table
    from .export import find_checkpoint

    cfg = validate(_config_from_args(args))
    checkpoint = find_checkpoint(args.checkpoint) if args.checkpoint else None
    table, _ = paper_table(cfg, weights=args.weights, checkpoint=checkpoint, split=args.split, paper=args.paper,
                           max_images=args.max_images, progress=sys.stderr.isatty())
    print(table)
    if args.out:
        with Path(args.out).open("a") as f:
            f.write(table + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from .modes import export

    weights, card_path, card = export(args.checkpoint, out=args.out, split=args.split, max_images=args.max_images,
                                      data_root=args.data_root)
    m = card["metrics"]
    print(f"wrote {weights} and {card_path} (sha256 {card['sha256'][:12]}...)")
    print(f"{m['split']} ({m['n_images']} images, {m['convention']}): PSNR {m['psnr']:.3f} dB / SSIM {m['ssim']:.4f}; "
          f"bicubic {m['bicubic_psnr']:.3f} / {m['bicubic_ssim']:.4f}")
    return 0


def _queue(args: argparse.Namespace) -> int:
    from .modes import export
    from .modes import train

    overrides = {"log.root": args.log_root} if args.log_root else {}
    configs = [load_config(name, overrides=overrides) for name in args.configs]  # all names checked first
    failed = 0
    for cfg in configs:
        print(f"== queue: {cfg['name']}", flush=True)
        try:
            result = train(cfg, resume=True, progress=False)
            if not result.finished or args.no_export:
                continue
            weights, _, card = export(result.run_dir, out=args.out)
            m = card["metrics"]
            line = (f"{m['split']} PSNR {m['psnr']:.3f} / SSIM {m['ssim']:.4f} "
                    f"(bicubic {m['bicubic_psnr']:.3f} / {m['bicubic_ssim']:.4f}, {m['convention']})")
            if m["psnr"] <= m["bicubic_psnr"]:  # never ship a network that loses to bicubic
                kept = result.run_dir / weights.name
                for src in (weights, weights.with_suffix(".json")):
                    src.replace(kept.with_suffix(src.suffix))
                print(f"== NOT shipped (no better than bicubic), kept in {kept}: {line}", flush=True)
            else:
                print(f"== exported {weights}: {line}", flush=True)
        except MedSRError as exc:  # one bad run does not stop the queue
            failed += 1
            print(f"== {cfg['name']} failed: {exc}", flush=True)
    return 2 if failed else 0


def _diagnosis(args: argparse.Namespace) -> int:
    from .diagnosis import Recipe, markdown_table, run_experiment

    recipe = Recipe(width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed,
                    bf16=not args.fp32, threads=args.threads)
    results = run_experiment(args.kinds, out_dir=Path(args.out), recipe=recipe, config=args.config)
    print(markdown_table(results))
    return 0


def _results(args: argparse.Namespace) -> int:
    import datetime
    import platform

    import torch

    from .diagnosis import load_results, markdown_table
    from .evaluate import results_markdown, targets_markdown

    started = datetime.datetime.now()
    tables, gains = results_markdown(split=args.split, max_images=args.max_images)
    diagnosis = markdown_table(load_results(Path(args.diagnosis)))
    minutes = (datetime.datetime.now() - started).total_seconds() / 60
    header = (
        "# MedSR training results\n\n"
        f"Generated by `python -m training results` on {started:%Y-%m-%d} ({minutes:.0f} min, {platform.machine()}, "
        f"torch {torch.__version__}) from the weights shipped in `MedSRLib/weights/`: every table scores our "
        "models and the interpolation baselines on the same held-out test images with the paper's metric "
        "convention (`training/tables.yaml`), with the paper's published rows under ours. How each model was "
        "trained (data, configuration, iterations, wall time, validation metrics) is in its model card "
        "(`MedSRLib/weights/<name>_x<scale>.json`) and in `training/README.md`.\n\n"
    )
    if args.max_images:
        header += f"**Partial run: the first {args.max_images} images of each test split only.**\n\n"
    body = header + targets_markdown(gains) + "\n" + tables
    if diagnosis:
        body += "\n" + diagnosis
    else:
        body += "\n(SRDA Table III not included: run `python -m training diagnosis` first.)\n"
    from .throughplane import kept_results_section

    out = Path(args.out)
    kept = kept_results_section(out.read_text(encoding="utf-8")) if out.is_file() else ""
    if kept:  # the through-plane section (python -m training.throughplane results) is kept as it is
        body += "\n" + kept
    out.write_text(body)
    print(body)
    print(f"wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m training`` and ``medsr-train``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "configs":
            print("\n".join(available_configs()))
            return 0
        commands = {"train": _train, "evaluate": _evaluate, "export": _export, "queue": _queue, "results": _results,
                    "diagnosis": _diagnosis}
        return commands[args.command](args)
    except MedSRError as exc:
        print(f"medsr-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
