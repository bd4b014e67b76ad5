"""The ``medsr`` command line.

    medsr run IN OUT [--model M] --scale S [--axis A] [--device D] [--batch-size B] [--tile T] [--ensemble]
    medsr models [--json]
    medsr evaluate HR [--model M] --scale S [--convention C] [--json]
    medsr check IN SR --scale S [--axis A] [--diff OUT] [--json]

Errors a user can cause print one line ``medsr: error: ...`` and exit with status 2 (no traceback);
nothing is written. A cancelled run (Ctrl-C) exits 130 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import MedSRError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _axis(value: str) -> int | str:
    """``--axis``: a numpy array axis 0-2 or an anatomical plane name."""
    return int(value) if value.strip().lstrip("-").isdigit() else value.strip().lower()


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--axis", type=_axis, default=None,
                   help="slice axis: axial|coronal|sagittal (through the direction matrix) or a numpy axis 0-2 "
                        "(z,y,x); default: the axis with the largest spacing")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=None, help="slices per batch (default: from the memory budget)")
    p.add_argument("--memory-budget", type=float, default=None, metavar="MB", help="memory budget for activations, MB")
    p.add_argument("--tile", type=int, default=None, help="LR tile side in pixels for large slices (default: automatic)")
    p.add_argument("--ensemble", action="store_true", help="x8 geometric self-ensemble (8x slower, slightly better)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): fp16 autocast on CUDA, bf16 on CPUs where native bf16 measures faster "
                        "than fp32, else fp32; the image path always runs in fp32. fp32: full precision everywhere")
    p.add_argument("--weights", default=None, help="a weights file (.safetensors with its .json card) instead of the shipped one")


class _OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``medsr: error: ...`` and exit 2 (no usage block)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"medsr: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``medsr`` (exposed for docs and tests)."""
    parser = _OneLineParser(
        prog="medsr",
        description="Super-resolve CT and MR volumes slice by slice with deep networks (MedSRLib).",
    )
    parser.add_argument("--version", action="version", version=f"medsr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="super-resolve a volume file or DICOM folder and write NIfTI/NRRD/MHA")
    run.add_argument("input", help="volume file (.nii, .nii.gz, .nrrd, .mha, .mhd) or DICOM series folder")
    run.add_argument("output", help="output file (.nii, .nii.gz, .nrrd, .mha); never the input")
    run.add_argument("--model", default=None, help="registered model (see `medsr models`); default: per modality and scale")
    run.add_argument("--scale", type=int, required=True, help="integer in-plane scale factor")
    run.add_argument("--series-uid", default=None, help="DICOM SeriesInstanceUID when the folder holds several series")
    run.add_argument("--modality", choices=["CT", "MR"], type=str.upper, default=None, help="override the detected modality")
    run.add_argument("--float32", action="store_true", help="write float32 instead of the input's dtype")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse)")
    run.add_argument("--keep-raw-values", action="store_true",
                     help="keep the network's raw values (default: CT >= -1024 HU outside padding, MR >= 0 when the input is)")
    run.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--check", action="store_true",
                     help="data-consistency check: degrade the output back and compare with the input")
    run.add_argument("--diff", default=None, metavar="OUT",
                     help="write the difference volume degrade(SR) - input (input grid, input units); implies --check")
    _add_engine_options(run)

    models = sub.add_parser("models", help="list the registered models")
    models.add_argument("--json", action="store_true", help="JSON instead of a table")

    ev = sub.add_parser("evaluate", help="degrade HR images with the project's bicubic, super-resolve, score vs bicubic")
    ev.add_argument("hr", help="a folder of 2D images (PNG/JPEG/DICOM/NIfTI slices) or a volume file/DICOM folder")
    ev.add_argument("--model", default=None, help="registered model; default: per modality and scale")
    ev.add_argument("--scale", type=int, required=True)
    ev.add_argument("--convention", default="basicsr", help="metric convention: basicsr (default), srda, dridsr_y")
    ev.add_argument("--limit", type=int, default=None, help="evaluate at most this many images")
    ev.add_argument("--series-uid", default=None)
    ev.add_argument("--json", action="store_true", help="print the JSON contract on stdout")
    ev.add_argument("--per-image", action="store_true", help="with --json: add per-image scores")
    ev.add_argument("--quiet", action="store_true", help="no progress bar")
    ev.add_argument("--panel", default=None, metavar="OUT.png",
                    help="also write a PNG panel (LR, bicubic, model, HR with zoomed crops and PSNR) of the first image")
    _add_engine_options(ev)
    check = sub.add_parser("check", help="data-consistency check of any super-resolved volume against its input")
    check.add_argument("input", help="the low-resolution input volume (file or DICOM folder)")
    check.add_argument("sr", help="the super-resolved volume (from MedSR or another tool)")
    check.add_argument("--scale", type=int, required=True)
    check.add_argument("--axis", type=_axis, default=None, help="slice axis; default: inferred from the shapes")
    check.add_argument("--diff", default=None, metavar="OUT", help="write the difference volume (input grid, input units)")
    check.add_argument("--overwrite", action="store_true", help="replace an existing --diff file (default: refuse)")
    check.add_argument("--no-reference", action="store_true", help="skip the bicubic reference scores")
    check.add_argument("--series-uid", default=None)
    check.add_argument("--json", action="store_true", help="print the consistency object as JSON")
    return parser


class _Progress:
    """A tqdm progress bar fed by ``(done, total)`` callbacks (disabled with ``quiet``)."""

    def __init__(self, description: str, *, quiet: bool) -> None:
        self._description = description
        self._quiet = quiet
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self._quiet:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=self._description, unit="slice", file=sys.stderr, leave=False)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _cmd_run(args: argparse.Namespace) -> int:
    from .io import check_output_path, read_volume, write_volume
    from .models import default_model, get_model
    from .pipeline import super_resolve

    target = check_output_path(args.output, inputs=[args.input], overwrite=args.overwrite)
    diff_target = None
    if args.diff is not None:
        diff_target = check_output_path(args.diff, inputs=[args.input], others=[args.output], overwrite=args.overwrite)
    volume = read_volume(args.input, series_uid=args.series_uid, modality=args.modality)
    if args.model is None:
        from .intensity import guess_modality

        spec = default_model(args.modality or volume.modality or guess_modality(volume), args.scale)
    else:
        spec = get_model(args.model)
    spec.check_scale(args.scale)
    from .intensity import guess_modality as _guess
    from .safety import explain_model_choice

    for note in explain_model_choice(spec, modality=(args.modality or volume.modality or _guess(volume)).upper(),
                                     scale=args.scale, weights=args.weights, defaulted=args.model is None):
        warnings.warn(note, UserWarning, stacklevel=1)  # issue 15 (13): which model runs and why
    bar = _Progress(f"{spec.name} x{args.scale}", quiet=args.quiet or args.json)
    try:
        result = super_resolve(
            volume,
            model=spec,
            scale=args.scale,
            axis=args.axis,
            device=args.device,
            batch_size=args.batch_size,
            memory_budget_mb=args.memory_budget,
            tile=args.tile,
            ensemble=args.ensemble,
            precision=args.precision,
            output_dtype="float32" if args.float32 else "input",
            modality=args.modality,
            weights=args.weights,
            progress=bar,
            clip_output=not args.keep_raw_values,
        )
    finally:
        bar.close()
    report = None
    if args.check or diff_target is not None:
        from .consistency import check_consistency

        report = check_consistency(
            volume, result, scale=args.scale, axis=result.metadata["medsr"]["slice_axis"],
            keep_difference=diff_target is not None,
        )
    from .provenance import build_provenance

    record = build_provenance(result, input_path=args.input, options=vars(args),
                              consistency=report.to_json() if report is not None else None)
    written = write_volume(result, target, inputs=[args.input], overwrite=args.overwrite, provenance=record)
    if diff_target is not None and report is not None and report.difference is not None:
        write_volume(report.difference, diff_target, inputs=[args.input], overwrite=args.overwrite)
    summary = {
        "input": str(args.input),
        "output": str(written),
        "model": spec.name,
        "scale": args.scale,
        "slice_axis": result.metadata["medsr"]["slice_axis"],
        "input_shape_zyx": list(volume.shape),
        "output_shape_zyx": list(result.shape),
        "input_spacing": list(volume.spacing),
        "output_spacing": list(result.spacing),
        "output_origin": list(result.origin),
        "dtype": str(result.array.dtype),
    }
    if report is not None:
        summary["consistency"] = report.to_json()
        if diff_target is not None:
            summary["difference"] = str(diff_target)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {written}: {spec.name} x{args.scale}, shape (z,y,x) {tuple(volume.shape)} -> {tuple(result.shape)}, "
            f"spacing (x,y,z) {tuple(round(s, 4) for s in result.spacing)} mm"
        )
        if report is not None:
            print(report.summary())
        if diff_target is not None:
            print(f"wrote difference volume {diff_target}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from .consistency import check_consistency
    from .io import check_output_path, read_volume, write_volume

    diff_target = None
    if args.diff is not None:
        diff_target = check_output_path(args.diff, inputs=[args.input, args.sr], overwrite=args.overwrite)
    volume = read_volume(args.input, series_uid=args.series_uid)
    sr = read_volume(args.sr)
    report = check_consistency(
        volume, sr, scale=args.scale, axis=args.axis, reference=not args.no_reference,
        keep_difference=diff_target is not None,
    )
    if diff_target is not None and report.difference is not None:
        write_volume(report.difference, diff_target, inputs=[args.input, args.sr], overwrite=args.overwrite)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
        if diff_target is not None:
            print(f"wrote difference volume {diff_target}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    rows = []
    for spec in list_models():
        rows.append(
            {
                "name": spec.name,
                "network": spec.network,
                "config": spec.config,
                "paper": spec.paper,
                "modality": spec.modality,
                "scales": list(spec.scales),
                "parameters": {f"x{s}": spec.num_parameters(s) for s in spec.scales},
                "weights": {f"x{s}": spec.has_weights(s) for s in spec.scales},
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("name", "network", "config", "modality", "scales", "parameters", "weights")
    table = [header]
    for row in rows:
        params = row["parameters"]
        values = sorted(set(params.values()))
        param_text = f"{values[0]:,}" if len(values) == 1 else f"{values[0]:,}-{values[-1]:,}"
        have = [k for k, v in row["weights"].items() if v]
        weights_text = "n/a (not learned)" if row["network"] in ("bicubic", "nearest") else (", ".join(have) or "none")
        table.append((row["name"], row["network"], row["config"], row["modality"],
                      ",".join(f"x{s}" for s in row["scales"]), param_text, weights_text))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    if args.panel is not None:
        from .engine import EngineOptions
        from .panel import panel_for_path

        panel_for_path(
            args.hr, args.panel, model=args.model, scale=args.scale, convention=args.convention, axis=args.axis,
            series_uid=args.series_uid, weights=args.weights,
            options=EngineOptions(device=args.device, ensemble=args.ensemble),
        )
    bar = _Progress("evaluate", quiet=args.quiet or args.json)
    try:
        result = evaluate(
            args.hr,
            model=args.model,
            scale=args.scale,
            convention=args.convention,
            axis=args.axis,
            series_uid=args.series_uid,
            device=args.device,
            ensemble=args.ensemble,
            weights=args.weights,
            limit=args.limit,
            progress=bar,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_json(per_image=args.per_image), indent=2))
    else:
        print(f"{result.n_images} images, x{result.scale}, convention {result.convention}")
        print(f"{'':10}{'PSNR (dB)':>12}{'SSIM':>10}")
        print(f"{'bicubic':10}{result.bicubic_psnr:12.3f}{result.bicubic_ssim:10.4f}")
        print(f"{result.model:10}{result.psnr:12.3f}{result.ssim:10.4f}")
    return 0


COMMANDS = {"run": _cmd_run, "models": _cmd_models, "evaluate": _cmd_evaluate, "check": _cmd_check}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsr`` console script; returns the exit status."""
    from .io.writers import written_paths
    from .safety import install_cli_warnings, install_termination_handler, interrupt_message

    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    install_cli_warnings()  # issue 15 (13): one-line "medsr: warning:" lines, ITK's multi-line ones off
    install_termination_handler()  # issue 15 (9): SIGTERM like Ctrl-C
    written_before = len(written_paths())
    try:
        return COMMANDS[args.command](args)
    except MedSRError as exc:
        print(f"medsr: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"medsr: {interrupt_message(written_before)}", file=sys.stderr)  # issue 15 (9): truthful
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
