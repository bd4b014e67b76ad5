"""Headless batch super-resolution inside 3D Slicer: read a volume file, run MedSR, write the result.

    Slicer --no-main-window --python-script Testing/MedSRBatch.py -- IN OUT --model M --scale S
        [--axis auto|axial|coronal|sagittal|0|1|2] [--plane in|auto|through] [--target-spacing MM]
        [--adapt SECONDS] [--through-model auto|tp-NAME] [--weights FILE] [engine flags] [--install-dependencies]

The engine flags are ``medsr``'s own (``--device --batch-size --memory-budget --tile --tile-overlap
--ensemble --precision --threads --compile``), derived from ``MedSRLib.engine.EngineOptions`` through the
module's ``engine_settings`` (the panel's Advanced settings), and validated the same way. ``--plane``
defaults to ``in`` (today's meaning of ``--scale``); ``auto`` goes through-plane when the slice spacing is
at least 2x the in-plane spacing (MedSRLib's ``pipeline.resolve_plane``), ``through`` always; a
through-plane run uses ``--through-model`` (``auto``: MedSRLib's network for the volume's modality) and
ignores ``--model``/``--scale``. ``--weights`` is ``medsr run``'s: a weights file instead of the shipped one.

IN is read with Slicer's own reader (``slicer.util.loadVolume``: ITK LPS -> Slicer RAS), OUT is
written with ``slicer.util.saveNode`` (any format Slicer writes: .nrrd, .nii.gz, .mha, ...). The
MedSR module must be loaded: an installed extension is (unless ``--testing``); from a build tree pass
``--additional-module-paths <build>/lib/Slicer-X.Y/qt-scripted-modules``.

Exit status: 0 success, 2 bad input or missing dependency (one-line ``MedSR: error: ...`` on stderr,
nothing written), 1 anything else. ``--python-script`` alone would leave Slicer running, so the
script always ends with ``slicer.util.exit(status)`` (slicer-conventions.md 6.4).
"""

import argparse
import logging
import os
import sys
import time

import slicer


def _engineSettings():
    """The module's engine settings (``MedSRSlicerLib.engine_settings.SETTINGS``); none when MedSR is not loaded
    (``run`` then says so)."""
    try:
        from MedSRSlicerLib import engine_settings
    except ImportError:
        return ()
    return engine_settings.SETTINGS


def parseArguments(argv):
    parser = argparse.ArgumentParser(prog="MedSRBatch.py", description="Super-resolve a volume file with MedSR in Slicer.")
    parser.add_argument("input", help="input volume file (NRRD, NIfTI, MHA, ...)")
    parser.add_argument("output", help="output volume file; its extension selects the format")
    parser.add_argument("--model", default="bicubic", help="MedSRLib model name (default: bicubic)")
    parser.add_argument("--scale", type=int, default=2, help="in-plane factor (default: 2)")
    parser.add_argument("--axis", default="auto", help="auto, axial, coronal, sagittal, or numpy axis 0-2 of (k, j, i)")
    parser.add_argument("--plane", default="in", choices=("in", "auto", "through"),
                        help="in (default), auto (through-plane when slice spacing >= 2x in-plane spacing), through")
    parser.add_argument("--target-spacing", type=float, default=0.0, metavar="MM",
                        help="through-plane output slice spacing, mm (default: the in-plane spacing)")
    parser.add_argument("--adapt", type=float, default=0.0, metavar="SECONDS",
                        help="through-plane per-volume adaptation time, s (default: none)")
    parser.add_argument("--views", type=int, default=4, choices=(2, 4),
                        help="through-plane views fused: 4 (default: both orientations and both voxel diagonals) or 2")
    parser.add_argument("--through-model", default="auto", metavar="NAME",
                        help="through-plane network: auto (MedSRLib's for the volume's modality) or a tp-* name")
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help="a weights file (.safetensors with its .json card) instead of the shipped one")
    for setting in _engineSettings():  # medsr's engine flags, stored as the panel stores them
        if setting.kind == "bool":
            parser.add_argument(setting.flag, dest=setting.field, action="store_true", help=setting.help)
        else:
            parser.add_argument(setting.flag, dest=setting.field, default=setting.default, help=setting.help,
                                choices=setting.choices or None)
    parser.add_argument("--memory-budget-mb", dest="memory_budget_mb", help=argparse.SUPPRESS)  # earlier name
    parser.add_argument("--install-dependencies", action="store_true",
                        help="install missing Python packages (torch through the PyTorch extension) without asking")
    arguments = parser.parse_args(argv[1:] if argv and argv[0] == "--" else argv)
    if arguments.axis in ("0", "1", "2"):
        arguments.axis = int(arguments.axis)
    return arguments


def run(arguments) -> int:
    """Process one file; raises MedSRError subclasses for bad input."""
    if not hasattr(slicer.modules, "medsr"):
        print("MedSR: error: the MedSR module is not loaded; pass --additional-module-paths <folder of MedSR.py>",
              file=sys.stderr)
        return 2
    import MedSR
    from MedSRLib.errors import InputFileError
    from MedSRLib.io import check_output_path
    from MedSRSlicerLib import dependencies, reporting

    if not os.path.isfile(arguments.input):
        raise InputFileError(f"input file '{arguments.input}' does not exist")
    check_output_path(arguments.output, inputs=[arguments.input])  # writable, known extension, not the input
    if arguments.install_dependencies:
        dependencies.ensureDependencies(askConfirmation=False)  # the flag is the consent: no dialog (it would block headless)
    else:
        dependencies.checkDependencies()

    inputVolume = slicer.util.loadVolume(arguments.input)
    tracker = reporting.ProgressTracker()
    lastPrint = [0.0]

    def progress(done, total):
        tracker(done, total)
        if time.monotonic() - lastPrint[0] >= 2.0 or done == total:
            lastPrint[0] = time.monotonic()
            print(f"MedSR: {reporting.describeProgress(tracker.snapshot())}", flush=True)

    logic = MedSR.MedSRLogic()
    outputVolume = logic.process(
        inputVolume,
        model=arguments.model,
        scale=arguments.scale,
        axis=arguments.axis,
        engine={s.field: getattr(arguments, s.field) for s in _engineSettings()},  # validated before anything runs
        plane=arguments.plane,
        targetSpacingMM=arguments.target_spacing,
        adaptSeconds=arguments.adapt,
        throughModel=arguments.through_model,
        throughDiagonals=arguments.views == 4,
        weights=arguments.weights,
        progress=progress,
        showResult=False,
        onWarning=lambda message: print(f"MedSR: warning: {message}", file=sys.stderr),
    )
    if not slicer.util.saveNode(outputVolume, arguments.output):
        print(f"MedSR: error: could not write '{arguments.output}' (check the folder and the extension)", file=sys.stderr)
        return 1
    for note in logic.lastNotes:
        print(f"MedSR: note: {note}")
    print(f"MedSR: {reporting.describeRun(logic.lastRunInfo)}")
    print(f"MedSR: wrote {arguments.output}")
    return 0


def main(argv) -> int:
    """Exit status of one batch run (0 ok, 2 bad input / missing dependency, 1 other failure)."""
    try:
        arguments = parseArguments(argv)
    except SystemExit as exit:  # argparse: --help or bad arguments
        return int(exit.code or 0)
    try:
        return run(arguments)
    except Exception as error:
        from MedSRLib.errors import MedSRError

        if isinstance(error, MedSRError):
            print(f"MedSR: error: {error}", file=sys.stderr)
            return 2
        logging.exception("MedSR batch run failed")
        return 1


if __name__ == "__main__":  # Slicer runs --python-script files in __main__
    slicer.util.exit(main(sys.argv[1:]))
