"""The ``medsr`` command line.

    medsr run IN OUT [--model M] --scale S [--axis A] [--device D] [--batch-size B] [--tile T] [--ensemble]
    medsr models [--json] [--card NAME[:SCALE]]
    medsr evaluate HR [--model M] --scale S [--convention C] [--json]
    medsr check IN SR --scale S [--axis A] [--diff OUT] [--json]
    medsr precision [--measure] [--json]
    medsr example [NAME] [--list]

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
    """``--axis``, ``--weights`` and one flag per offered :class:`~MedSRLib.engine.EngineOptions` field
    (derived from the field's metadata, so every flag is honoured by every command that offers it)."""
    from .engine.options import option_fields

    p.add_argument("--axis", type=_axis, default=None,
                   help="slice axis: axial|coronal|sagittal (through the direction matrix) or a numpy axis 0-2 "
                        "(z,y,x); default: the axis with the largest spacing")
    for name, meta in option_fields(offered_only=True).items():
        if meta["type"] is bool:
            p.add_argument(meta["flag"], dest=name, action="store_true", help=meta["help"])
        else:
            p.add_argument(meta["flag"], dest=name, type=meta["type"], default=None, metavar=meta["metavar"],
                           choices=meta["choices"], help=meta["help"])
    p.add_argument("--weights", default=None, help="a weights file (.safetensors with its .json card) instead of the shipped one")


def _engine_options(args: argparse.Namespace) -> Any:
    """The validated :class:`~MedSRLib.engine.EngineOptions` of the parsed flags (unset flags keep the
    defaults); an invalid value raises :class:`~MedSRLib.errors.OptionError` naming the field."""
    from .engine import engine_options
    from .engine.options import option_fields

    given = {name: getattr(args, name) for name in option_fields(offered_only=True)
             if getattr(args, name) is not None and getattr(args, name) is not False}
    return engine_options(**given)


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
    run.add_argument("output", help="output file (.nii, .nii.gz, .nrrd, .mha), or a folder with --output-format dicom; "
                                    "never the input")
    run.add_argument("--output-format", choices=["auto", "dicom"], default="auto",
                     help="auto (default): from the output's file ending; dicom: write a derived DICOM series into "
                          "the folder OUTPUT (new or empty)")
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
    run.add_argument("--panel", default=None, metavar="OUT.png",
                     help="also write a PNG picture: input, bicubic and the model, slice + crop + reformat across "
                          "the slice axis, radiological orientation")
    run.add_argument("--window", default=None, help="CT display window of --panel: soft-tissue (default), lung, bone, brain")
    run.add_argument("--diff", default=None, metavar="OUT",
                     help="write the difference volume degrade(SR) - input (input grid, input units); implies --check")
    _add_engine_options(run)

    models = sub.add_parser("models", help="list the registered models, or print a model card")
    models.add_argument("--json", action="store_true",
                        help="JSON instead of a table (with --card: the card, or a list of cards when SCALE is left out)")
    models.add_argument("--card", default=None, metavar="NAME[:SCALE]",
                        help="print the model card of NAME at SCALE (every scale with weights when SCALE is left out)")

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
    prec = sub.add_parser("precision", help="show what --precision auto runs on this machine; --measure caches a measured choice")
    prec.add_argument("--measure", action="store_true",
                      help="time bf16 against fp32 convolutions here and cache the choice for 'auto' (a few seconds)")
    prec.add_argument("--device", default="auto", help="device to report for (default auto)")
    prec.add_argument("--json", action="store_true", help="JSON instead of text")
    example = sub.add_parser("example", help="print the path of a small real example volume shipped with MedSR")
    example.add_argument("name", nargs="?", default=None, help="example name (see --list)")
    example.add_argument("--list", action="store_true", help="list the examples (name, modality, shape, licence)")
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

    options = _engine_options(args)  # invalid engine flags fail before anything is read
    if args.output_format == "dicom":
        from .io.dicom_writer import check_dicom_output_folder

        target = check_dicom_output_folder(args.output, inputs=[args.input])
    else:
        target = check_output_path(args.output, inputs=[args.input], overwrite=args.overwrite)
    diff_target = None
    if args.diff is not None:
        diff_target = check_output_path(args.diff, inputs=[args.input], others=[args.output], overwrite=args.overwrite)
    if args.panel is not None:
        from .panel import check_panel_path

        check_panel_path(args.panel, [args.input, args.output], window=args.window)
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
            options=options,
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
    panel_path = None
    if args.panel is not None:
        from .panel import save_volume_panel

        columns = {} if spec.name == "bicubic" else {"bicubic": super_resolve(
            volume, model="bicubic", scale=args.scale, axis=result.metadata["medsr"]["slice_axis"], modality=args.modality)}
        panel_path = save_volume_panel(volume, {**columns, spec.name: result}, args.panel, window=args.window,
                                       inputs=[args.input])
    from .provenance import build_provenance

    record = build_provenance(result, input_path=args.input, options=vars(args),
                              consistency=report.to_json() if report is not None else None)
    if args.output_format == "dicom":
        from .io.dicom_writer import write_dicom_series
        from .io.writers import write_sidecar

        written = write_dicom_series(result, target, inputs=[args.input])
        write_sidecar(written, record, overwrite=False)
    else:
        written = write_volume(result, target, inputs=[args.input], overwrite=args.overwrite, provenance=record)
    if diff_target is not None and report is not None and report.difference is not None:
        write_volume(report.difference, diff_target, inputs=[args.input], overwrite=args.overwrite)
    run_info = result.metadata["medsr"]
    summary = {
        "input": str(args.input),
        "output": str(written),
        "model": spec.name,
        "scale": args.scale,
        "slice_axis": run_info["slice_axis"],
        "precision": run_info["precision"],
        "device": run_info["device"],
        "factors_zyx": run_info["grid"]["factors_zyx"],
        "input_shape_zyx": list(volume.shape),
        "output_shape_zyx": list(result.shape),
        "input_spacing_zyx": list(reversed(volume.spacing)),
        "output_spacing_zyx": list(reversed(result.spacing)),
        "output_origin_lps": list(result.origin),
        "dtype": str(result.array.dtype),
    }
    if panel_path is not None:
        summary["panel"] = str(panel_path)
    if report is not None:
        summary["consistency"] = report.to_json()
        if diff_target is not None:
            summary["difference"] = str(diff_target)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"wrote {written}: {spec.name} x{args.scale} ({run_info['precision']} on {run_info['device']}); "
            f"array axes (z,y,x): shape {tuple(volume.shape)} -> {tuple(result.shape)}, "
            f"spacing {tuple(round(s, 4) for s in reversed(result.spacing))} mm"
        )
        if report is not None:
            print(report.summary())
        if diff_target is not None:
            print(f"wrote difference volume {diff_target}")
        if panel_path is not None:
            print(f"wrote panel {panel_path}")
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


def _parse_card_arg(text: str) -> tuple[str, int | None]:
    """``NAME[:SCALE]`` (``dridsr:2``, ``dridsr:x2``, ``dridsr``) -> ``(name, scale or None)``."""
    from .errors import ScaleError

    name, _, scale = str(text).partition(":")
    if not scale:
        return name, None
    digits = scale.strip().lower().removeprefix("x")
    if not digits.isdigit():
        raise ScaleError(f"--card {text}: the scale after ':' must be an integer like 2 or x2")
    return name, int(digits)


def _cmd_models(args: argparse.Namespace) -> int:
    """The registry table and the model cards, from the cached table and the JSON cards (no torch, no networks built)."""
    from .models.cards import WEIGHTS_DIR, card_text, load_card, read_table

    table = read_table()
    if args.card is not None:
        name, scale = _parse_card_arg(args.card)
        if args.json:
            cards = load_card(name, scale)
            print(json.dumps(cards[0] if len(cards) == 1 else cards, indent=2))
        else:
            print(card_text(name, scale), end="")
        return 0
    rows = []
    for row in table["models"]:
        rows.append(
            {
                "name": row["name"],
                "network": row["network"],
                "config": row["config"],
                "paper": row["paper"],
                "modality": row["modality"],
                "scales": list(row["scales"]),
                "parameters": dict(row["parameters"]),
                "macs_per_lr_pixel": dict(row["macs_per_lr_pixel"]),
                "weights": {f"x{s}": (not row["learned"]) or (WEIGHTS_DIR / f"{row['name']}_x{s}.safetensors").is_file()
                            for s in row["scales"]},
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0

    def span(values: dict[str, float], fmt: str) -> str:
        low, high = min(values.values()), max(values.values())
        return fmt.format(low) if low == high else f"{fmt.format(low)}-{fmt.format(high)}"

    header = ("name", "network", "config", "modality", "scales", "parameters", "kMACs/LR px", "weights")
    table_rows = [header]
    for row in rows:
        have = [k for k, v in row["weights"].items() if v]
        weights_text = "n/a (not learned)" if row["network"] in ("bicubic", "nearest") else (", ".join(have) or "none")
        macs = {k: v / 1e3 for k, v in row["macs_per_lr_pixel"].items()}
        table_rows.append((row["name"], row["network"], row["config"], row["modality"],
                           ",".join(f"x{s}" for s in row["scales"]), span(row["parameters"], "{:,}"),
                           span(macs, "{:,.1f}"), weights_text))
    widths = [max(len(str(r[i])) for r in table_rows) for i in range(len(header))]
    for i, r in enumerate(table_rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nkMACs/LR px: thousands of conv/linear multiply-accumulates per low-resolution input pixel (times the "
          "pixels of a slice = per slice).\nModel card: medsr models --card NAME[:SCALE], e.g. --card dridsr:2")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    options = _engine_options(args)  # invalid engine flags fail before any work
    if args.panel is not None:
        from .panel import panel_for_path

        panel_for_path(
            args.hr, args.panel, model=args.model, scale=args.scale, convention=args.convention, axis=args.axis,
            series_uid=args.series_uid, weights=args.weights, options=options,
        )
        print(f"wrote panel {Path(args.panel).resolve()}", file=sys.stderr if args.json else sys.stdout)
    bar = _Progress("evaluate", quiet=args.quiet or args.json)
    try:
        result = evaluate(
            args.hr,
            model=args.model,
            scale=args.scale,
            convention=args.convention,
            axis=args.axis,
            series_uid=args.series_uid,
            weights=args.weights,
            limit=args.limit,
            options=options,
            progress=bar,
        )
    finally:
        bar.close()
    if args.json:
        print(json.dumps(result.to_json(per_image=args.per_image), indent=2))
    else:
        print(f"{result.n_images} images, x{result.scale}, convention {result.convention}, "
              f"{result.precision} on {result.device}")
        print(f"{'':10}{'PSNR (dB)':>12}{'SSIM':>10}")
        print(f"{'bicubic':10}{result.bicubic_psnr:12.3f}{result.bicubic_ssim:10.4f}")
        print(f"{result.model:10}{result.psnr:12.3f}{result.ssim:10.4f}")
    return 0


def _cmd_precision(args: argparse.Namespace) -> int:
    from .engine import auto_cpu_precision, cpu_info, measure_cpu_precision, resolve_device, resolve_precision
    from .engine.precision import cache_dir

    device = resolve_device(args.device)
    info = cpu_info()
    report: dict[str, Any] = {"device": str(device), "cpu": info.model, "vendor": info.vendor,
                              "cache": str(cache_dir())}
    if args.measure:
        report["measured"] = measure_cpu_precision()
    source = auto_cpu_precision()[1] if device.type == "cpu" else "device"
    report.update({"auto": resolve_precision("auto", device), "source": source})
    if report["auto"] == "bf16" and device.type == "cpu":
        from .engine.precision import BF16_MAX_HU, BF16_MEASURED_MAX_HU, bf16_allowed

        report["fp32_networks"] = [f"{m} x{s}" for (m, s) in sorted(BF16_MEASURED_MAX_HU) if not bf16_allowed(m, s)]
        report["bf16_max_hu"] = BF16_MAX_HU
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if args.measure:
        m = report["measured"]
        print(f"measured: bf16 convolutions run {m['bf16_gain']:.2f}x fp32 here; cached '{m['precision']}' in {m['path']}")
    print(f"--precision auto on {device} ({info.model or 'unknown CPU'}): {report['auto']} (from the {source})")
    if report.get("fp32_networks"):
        print(f"  except {', '.join(report['fp32_networks'])}: fp32 (measured bf16 error above {report['bf16_max_hu']:g} HU)")
    return 0


def _cmd_example(args: argparse.Namespace) -> int:
    from .examples import example_path, list_examples

    if args.list or args.name is None:
        for e in list_examples():
            shape = "x".join(str(n) for n in e.shape_zyx)
            spacing = " x ".join(f"{s:.4g}" for s in reversed(e.spacing_xyz))
            print(f"{e.name:<11} {e.modality}  (z,y,x) {shape}, {spacing} mm  {e.licence:<10} {e.what}")
        if args.name is None:
            first = list_examples()[0]
            print(f"`medsr example NAME` prints the path; e.g. {first.command.format(path=f'$(medsr example {first.name})')}")
        return 0
    print(example_path(args.name))
    return 0


COMMANDS = {"run": _cmd_run, "models": _cmd_models, "evaluate": _cmd_evaluate, "check": _cmd_check,
            "precision": _cmd_precision, "example": _cmd_example}


def interrupt_message(before: int = 0) -> str:
    """The CLI's line after an interrupt: which files were written since ``len(written_paths()) == before``."""
    from .io.writers import written_paths

    written = written_paths()[before:]
    if not written:
        return "interrupted; nothing was written"
    return f"interrupted after writing {', '.join(str(p) for p in written)} (complete)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medsr`` console script; returns the exit status."""
    from .io.writers import written_paths
    from .safety import install_cli_warnings, install_termination_handler

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
