"""The ``medsr`` command line.

    medsr run IN OUT [--model M] [--scale S] [--plane auto|in|through|both] [--target-spacing MM]
                     [--thickness MM] [--adapt SECONDS] [--axis A] [--device D] [--batch-size B] [--tile T] [--ensemble]
    medsr run -i FOLDER|LIST.txt -o OUT_FOLDER [the options of one volume] [--continue] [--num-parts N --part-id I]
                                                                                                  (a cohort)
    medsr models [--json] [--card NAME[:SCALE]]
    medsr evaluate HR [--model M] --scale S [--convention C] [--json]
    medsr evaluate VOLUME --through-plane --mm 3 5 7 [--model M] [--adapt SECONDS] [--views 2|4] [--json]
    medsr check IN SR [--scale S] [--plane in|through] [--axis A] [--diff OUT] [--json]
    medsr precision [--measure] [--json]
    medsr example [NAME] [--list]

Errors a user can cause print one line ``medsr: error: ...`` and exit with status 2 (no traceback);
nothing is written. A cancelled run (Ctrl-C) exits 130 and writes nothing.

A cohort (``medsr run`` with a folder of volumes or a list file; :mod:`MedSRLib.batch`) exits 0 when
every volume was written or skipped as complete, 1 when any volume failed (each failure is reported
and the others are written), 2 for a user error found before any work, 130 when interrupted (complete
outputs and the summary stay).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .batch import CohortReporter, VolumeRecord, WorkItem
from .errors import MedSRError
from .run import RunOptions, axis_value, run_option_fields, run_summary, summary_text

__all__ = ["build_parser", "interrupt_message", "main", "run_summary", "summary_text"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _add_engine_options(p: argparse.ArgumentParser, *, axis_and_weights: bool = True) -> None:
    """One flag per offered :class:`~MedSRLib.engine.EngineOptions` field (derived from the field's
    metadata, so every flag is honoured by every command that offers it), and ``--axis``/``--weights``
    (from :class:`~MedSRLib.run.RunOptions`' fields) unless ``medsr run`` adds them with its run options."""
    from .engine.options import option_fields

    if axis_and_weights:
        _add_fields(p, run_option_fields(), only=("axis", "weights"))
    _add_fields(p, option_fields(offered_only=True))


def _add_fields(p: argparse.ArgumentParser, offered: dict[str, dict[str, Any]], *, only: Sequence[str] = ()) -> None:
    """A flag per field of an options type (``type`` bool: a switch)."""
    for name, meta in offered.items():
        if only and name not in only:
            continue
        if meta["type"] is bool:
            p.add_argument(meta["flag"], dest=name, action="store_true", help=meta["help"])
        else:
            p.add_argument(meta["flag"], dest=name, type=meta["type"], default=None, metavar=meta["metavar"],
                           choices=meta["choices"], help=meta["help"])


def _add_cohort_options(p: argparse.ArgumentParser) -> None:
    """``-i/-o`` (beside the positional IN OUT) and the cohort flags of ``medsr run`` (:mod:`MedSRLib.batch`)."""
    p.add_argument("-i", "--input", dest="input_flag", default=None, metavar="IN", help="the input (instead of IN)")
    p.add_argument("-o", "--output", dest="output_flag", default=None, metavar="OUT", help="the output (instead of OUT)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="cohort: skip volumes whose output and provenance sidecar are complete; redo the others")
    p.add_argument("--num-parts", type=int, default=None, metavar="N",
                   help="cohort: split the sorted volumes into N parts (SLURM job array, Kubernetes indexed job)")
    p.add_argument("--part-id", type=int, default=None, metavar="I",
                   help="cohort: run part I (0-based) of --num-parts: volumes I, I+N, I+2N, ...")


def _engine_options(args: argparse.Namespace) -> Any:
    """The validated :class:`~MedSRLib.engine.EngineOptions` of the parsed flags (unset flags keep the
    defaults); an invalid value raises :class:`~MedSRLib.errors.OptionError` naming the field."""
    from .engine import engine_options
    from .engine.options import option_fields

    given = {name: getattr(args, name) for name in option_fields(offered_only=True)
             if getattr(args, name) is not None and getattr(args, name) is not False}
    return engine_options(**given)


def _run_options(args: argparse.Namespace) -> RunOptions:
    """The validated :class:`~MedSRLib.run.RunOptions` of ``medsr run``'s flags (a switch sets its
    field's ``store`` value); an invalid value raises :class:`~MedSRLib.errors.OptionError` naming the field."""
    given: dict[str, Any] = {}
    for name, meta in run_option_fields().items():
        value = getattr(args, name)
        if meta["type"] is bool:
            if value:
                given[name] = meta["store"]
        elif value is not None:
            given[name] = value
    return RunOptions(**given, engine=_engine_options(args))


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

    run = sub.add_parser("run", help="super-resolve a volume file or DICOM folder and write NIfTI/NRRD/MHA/DICOM, "
                                     "or a cohort (a folder of volumes, a list file) into an output folder")
    run.add_argument("input", nargs="?", default=None,
                     help="volume file (.nii, .nii.gz, .nrrd, .mha, .mhd) or DICOM series folder; or a cohort: a folder "
                          "of volumes / DICOM series folders, or a list file (.txt, one path per line)")
    run.add_argument("output", nargs="?", default=None,
                     help="output file (.nii, .nii.gz, .nrrd, .mha), or a folder with --output-format dicom; "
                          "never the input; for a cohort, the output folder")
    _add_cohort_options(run)
    run.add_argument("--output-format", choices=["auto", "dicom"], default="auto",
                     help="auto (default): from the output's file ending; dicom: write a derived DICOM series into "
                          "the folder OUTPUT (new or empty)")
    _add_fields(run, run_option_fields())  # model, scale, plane, target spacing, ..., check: RunOptions' fields
    run.add_argument("--series-uid", default=None, help="DICOM SeriesInstanceUID when the folder holds several series")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output file (default: refuse)")
    run.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--panel", default=None, metavar="OUT.png",
                     help="also write a PNG picture: input, bicubic and the model, slice + crop + reformat across "
                          "the slice axis, radiological orientation")
    run.add_argument("--window", default=None, help="CT display window of --panel: soft-tissue (default), lung, bone, brain")
    run.add_argument("--diff", default=None, metavar="OUT",
                     help="write the difference volume degrade(SR) - input (input grid, input units); implies --check")
    _add_engine_options(run, axis_and_weights=False)

    models = sub.add_parser("models", help="list the registered models, or print a model card")
    models.add_argument("--json", action="store_true",
                        help="JSON instead of a table (with --card: the card, or a list of cards when SCALE is left out)")
    models.add_argument("--card", default=None, metavar="NAME[:SCALE]",
                        help="print the model card of NAME at SCALE (every scale with weights when SCALE is left out)")

    ev = sub.add_parser("evaluate", help="degrade HR images with the project's bicubic, super-resolve, score vs bicubic")
    ev.add_argument("hr", help="a folder of 2D images (PNG/JPEG/DICOM/NIfTI slices) or a volume file/DICOM folder")
    ev.add_argument("--model", default=None, help="registered model; default: per modality and scale")
    ev.add_argument("--scale", type=int, default=None, help="integer in-plane scale (required unless --through-plane)")
    ev.add_argument("--through-plane", action="store_true",
                    help="through-plane mode for a near-isotropic volume: simulate thick slices (Gaussian profile, "
                         "FWHM = --mm, sampled every --mm) along --axis, super-resolve back, score inside a foreground "
                         "mask beside cubic B-spline and linear interpolation")
    ev.add_argument("--mm", type=float, nargs="+", default=None, metavar="MM",
                    help="--through-plane: simulated slice thickness = spacing in mm (default 5)")
    ev.add_argument("--adapt", type=float, default=None, metavar="SECONDS",
                    help="--through-plane: also score the network adapted for SECONDS to each simulated volume")
    ev.add_argument("--views", type=int, default=None, choices=(2, 4),
                    help="--through-plane: views the network's output fuses: 4 (default: both in-plane orientations "
                         "and both voxel diagonals) or 2 (the orientations only)")
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
    check.add_argument("--scale", type=int, default=None, help="in-plane scale (in-plane checks)")
    check.add_argument("--plane", choices=["in", "through"], default=None,
                       help="in: degrade in-plane with bicubic (needs --scale); through: re-degrade along the slice axis "
                            "with the slice profile; default: through when only one axis changed size")
    check.add_argument("--thickness", type=float, default=None, metavar="MM",
                       help="through: slice thickness in mm (default: DICOM SliceThickness, else the slice spacing)")
    check.add_argument("--axis", type=axis_value, default=None, help="slice axis; default: inferred from the shapes")
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
    """``medsr run IN OUT``: parse, :func:`MedSRLib.run.run_volume`, print the summary."""
    if _run_paths(args):
        return _cmd_run_cohort(args)
    from .run import run_volume

    options = _run_options(args)  # invalid flags fail before anything is read
    bars: list[_Progress] = []

    def progress(label: str) -> _Progress:
        bars.append(_Progress(label, quiet=args.quiet or args.json))
        return bars[-1]

    try:
        run = run_volume(args.input, args.output, options, output_format=args.output_format,
                         series_uid=args.series_uid, overwrite=args.overwrite, diff=args.diff, panel=args.panel,
                         window=args.window, record_options=vars(args), progress=progress,
                         note=lambda text: warnings.warn(text, UserWarning, stacklevel=1))  # which model and why
    finally:
        for bar in bars:
            bar.close()
    summary = run.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(summary_text(summary))
        if run.consistency is not None:
            print(run.consistency.summary())
        if run.difference is not None:
            print(f"wrote difference volume {run.difference}")
        if run.panel is not None:
            print(f"wrote panel {run.panel}")
    return 0


def _run_paths(args: argparse.Namespace) -> bool:
    """Settle ``args.input``/``args.output`` from the positional or ``-i/-o`` form; True for a cohort input."""
    from .batch import is_cohort_input
    from .errors import OptionError

    for name in ("input", "output"):
        positional, flag = getattr(args, name), getattr(args, f"{name}_flag")
        if positional is not None and flag is not None:
            raise OptionError(f"the {name} is given twice ({positional} and -{name[0]} {flag}); give it once")
        if positional is None and flag is None:
            raise OptionError(f"the {name} is missing: medsr run IN OUT (or -i IN -o OUT)")
        setattr(args, name, positional if positional is not None else flag)
    cohort = is_cohort_input(args.input, output=args.output, output_format=args.output_format)
    if not cohort:
        used = [f for f, on in (("--continue", args.resume), ("--num-parts", args.num_parts is not None),
                                ("--part-id", args.part_id is not None)) if on]
        if used:
            raise OptionError(f"{', '.join(used)} apply to a folder of volumes or a list file; {args.input} is one volume")
    return cohort


class _CohortReporter(CohortReporter):
    """Per-volume progress of a cohort on stderr: a slice bar while it runs, one line when it ends
    (failures are always reported; ``--quiet`` drops the rest, ``--json`` the bar)."""

    def __init__(self, *, quiet: bool, bar: bool) -> None:
        self._quiet, self._bar_on = quiet, bar
        self._bar: _Progress | None = None

    def start(self, item: WorkItem, index: int, total: int) -> Any:
        self._bar = _Progress(f"[{index}/{total}] {item.key}", quiet=self._quiet or not self._bar_on)
        return self._bar

    def finish(self, record: VolumeRecord, index: int, total: int) -> None:
        if self._bar is not None:
            self._bar.close()
        if record.status == "failed":
            print(f"medsr: [{index}/{total}] {record.file} failed: {record.error}", file=sys.stderr)
        elif not self._quiet:
            through = " through-plane" if record.run_plane == "through" else ""
            what = (f"done in {record.seconds:.1f} s ({record.model} x{record.factor:.3g}{through}) -> {record.output}"
                    if record.status == "done" else "skipped (output complete)")
            print(f"medsr: [{index}/{total}] {record.file} {what}", file=sys.stderr)

    def note(self, text: str) -> None:
        warnings.warn(text, UserWarning, stacklevel=1)


def _cmd_run_cohort(args: argparse.Namespace) -> int:
    """``medsr run`` over a folder or list file (:mod:`MedSRLib.batch`); returns the exit status of the summary."""
    from .batch import plan_cohort, run_cohort, summary_paths
    from .errors import OptionError

    not_here = [f for f, v in (("--panel", args.panel), ("--diff", args.diff), ("--series-uid", args.series_uid)) if v]
    if not_here:
        raise OptionError(f"{', '.join(not_here)} apply to one volume; run them on a volume of the cohort")
    if (args.num_parts is None) != (args.part_id is None):
        raise OptionError("--num-parts and --part-id go together (e.g. --num-parts 4 --part-id $SLURM_ARRAY_TASK_ID)")
    options = _run_options(args)  # invalid flags fail before the cohort is listed
    plan = plan_cohort(args.input, args.output, output_format="dicom" if args.output_format == "dicom" else "nifti",
                       num_parts=1 if args.num_parts is None else args.num_parts,
                       part_id=0 if args.part_id is None else args.part_id, resume=args.resume,
                       overwrite=args.overwrite)
    if not args.quiet:
        part = f", part {plan.part_id} of {plan.num_parts}" if plan.num_parts > 1 else ""
        print(f"medsr: {len(plan.items)} of {plan.n_total} volume(s) in {plan.input}{part} -> {plan.output_folder}"
              + (f" ({len(plan.ignored)} file(s) that are not volumes ignored)" if plan.ignored else ""), file=sys.stderr)
    try:
        summary = run_cohort(plan, options, resume=args.resume, overwrite=args.overwrite, run_options=vars(args),
                             reporter=_CohortReporter(quiet=args.quiet, bar=not args.json))
    except KeyboardInterrupt:
        print(f"medsr: summary so far in {', '.join(str(p) for p in summary_paths(plan))}", file=sys.stderr)
        raise
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in summary.counts().items() if n)
        print(f"{len(summary.records)} volume(s): {counts} in {summary.seconds:.1f} s; models loaded: "
              f"{', '.join(summary.models_loaded) or 'none'}; summary {summary.paths[0]} and .json")
    return summary.exit_status


def _cmd_check(args: argparse.Namespace) -> int:
    from .consistency import check_consistency
    from .io import check_output_path, read_volume, write_volume

    diff_target = None
    if args.diff is not None:
        diff_target = check_output_path(args.diff, inputs=[args.input, args.sr], overwrite=args.overwrite)
    volume = read_volume(args.input, series_uid=args.series_uid)
    sr = read_volume(args.sr)
    report = check_consistency(
        volume, sr, scale=args.scale, axis=args.axis, plane=args.plane, thickness=args.thickness,
        reference=not args.no_reference, keep_difference=diff_target is not None,
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
    from .models.cards import WEIGHTS_DIR, card_text, load_card, read_table, weights_file_name

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
                "weights": {f"x{s}": (not row["learned"]) or (WEIGHTS_DIR / weights_file_name(
                                row["name"], s, multi_scale=bool(row.get("multi_scale")))).is_file() for s in row["scales"]},
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
          "pixels of a slice = per slice).\nModel card: medsr models --card NAME[:SCALE], e.g. --card dridsr:2; tp-*: through-plane networks, "
          "one weights file for every factor (--card tp-dridsr)")
    return 0


def _cmd_evaluate_through_plane(args: argparse.Namespace, options: Any) -> int:
    """``medsr evaluate VOLUME --through-plane --mm ...`` (:func:`MedSRLib.evaluate.evaluate_thick_slices`)."""
    from .errors import OptionError
    from .evaluate import evaluate_thick_slices

    if args.scale is not None or args.panel is not None or args.limit is not None:
        raise OptionError("--scale, --panel and --limit are for in-plane evaluation; --through-plane takes --mm")
    rows = evaluate_thick_slices(args.hr, mm=args.mm or [5.0], model=args.model, weights=args.weights, axis=args.axis,
                                 series_uid=args.series_uid, adapt_seconds=args.adapt, views=args.views, options=options)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    names = {"bspline3": "cubic B-spline", "linear": "linear", "network": rows[0]["model"], "adapted": "adapted"}
    print(f"{args.hr}: thick slices simulated along array axis {rows[0]['axis']} (Gaussian profile, FWHM = spacing), "
          f"{rows[0]['precision']}")
    print(f"{'mm':>5} {'factor':>7}  {'method':<16}{'PSNR (dB)':>10}{'SSIM':>8}{'vs B-spline':>13}{'s':>7}")
    for row in rows:
        for key, score in row["scores"].items():
            gain = row["gain_db"].get(key)
            print(f"{row['mm']:5g} {row['factor']:7.2f}  {names.get(key, key):<16}{score['psnr']:10.2f}{score['ssim']:8.4f}"
                  f"{'' if gain is None else f'{gain:+.2f} dB':>13}{row['seconds'][key]:7.1f}")
        if row["adaptation"]:
            ad = row["adaptation"]
            print(f"{'':14}adapted {ad['seconds']:.1f} s ({ad['iterations']} steps, seed {ad['seed']}): held-back "
                  f"{ad['heldout_psnr_before']:.2f} -> {ad['heldout_psnr_after']:.2f} dB (weights of step {ad['kept_step']} kept)")
    print(f"scores: {rows[0]['convention']}; mask: {rows[0]['mask_fraction']:.1%} of the voxels")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .errors import OptionError
    from .evaluate import evaluate

    options = _engine_options(args)  # invalid engine flags fail before any work
    if args.through_plane:
        return _cmd_evaluate_through_plane(args, options)
    if args.mm is not None or args.adapt is not None or args.views is not None:
        raise OptionError("--mm, --adapt and --views belong to --through-plane evaluation")
    if args.scale is None:
        raise OptionError("--scale is required (or --through-plane for the slice axis)")
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
