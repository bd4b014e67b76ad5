"""Progress, time left, and warnings of a run, for the panel and the batch script.

``ProgressTracker`` is the ``progress(done, total)`` callback MedSRLib calls after each batch of
slices (possibly from a worker thread); the panel reads :meth:`ProgressTracker.snapshot` on the
main thread. ``capturedWarnings`` collects what MedSRLib reports while running (e.g. "CUDA out of
memory: continuing on the CPU"), through ``warnings.warn`` or a ``MedSRLib.*`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a run stands: slices done of total, seconds elapsed, seconds left (None = unknown)."""

    done: int
    total: int
    elapsedSeconds: float
    remainingSeconds: Optional[float]


class ProgressTracker:
    """Thread-safe ``progress(done, total)`` callback that also estimates the time left.

    Before the first report the time left is ``initialEstimateSeconds`` minus the time elapsed;
    after it, the observed seconds per slice times the slices still to do, counted down between reports.
    """

    def __init__(self, initialEstimateSeconds: Optional[float] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._lastReport = self._start
        self._initialEstimate = initialEstimateSeconds

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._done, self._total = int(done), int(total)
            self._lastReport = self._clock()

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            done, total, lastReport = self._done, self._total, self._lastReport
        now = self._clock()
        elapsed = now - self._start
        if done > 0 and total > 0:
            secondsPerSlice = (lastReport - self._start) / done
            remaining = max(0.0, secondsPerSlice * (total - done) - (now - lastReport))
        elif self._initialEstimate is not None:
            remaining = max(0.0, self._initialEstimate - elapsed)
        else:
            remaining = None
        return ProgressSnapshot(done, total, elapsed, remaining)


def formatDuration(seconds: Optional[float]) -> str:
    """``"0:07"``, ``"12:05"``, ``"1:02:03"``; ``"unknown"`` for None."""
    if seconds is None:
        return "unknown"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describeProgress(snapshot: ProgressSnapshot) -> str:
    """One line for the panel: slices done, time elapsed, time left."""
    slices = f"{snapshot.done} / {snapshot.total} slices" if snapshot.total else "starting"
    return (
        f"{slices}, {formatDuration(snapshot.elapsedSeconds)} elapsed, "
        f"about {formatDuration(snapshot.remainingSeconds)} left"
    )


class _ForwardingHandler(logging.Handler):
    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self._report = report

    def emit(self, record: logging.LogRecord) -> None:
        self._report(record.getMessage())


@contextlib.contextmanager
def capturedWarnings(report: Callable[[str], None], loggerName: str = "MedSRLib") -> Iterator[list[str]]:
    """Collect warnings raised (``warnings.warn``) or logged (``loggerName`` at WARNING+) inside the block.

    Each distinct message is passed to ``report`` when the block ends (also when it raises) and is in
    the yielded list from then on.
    """
    collected: list[str] = []
    handler = _ForwardingHandler(collected.append)
    logger = logging.getLogger(loggerName)
    logger.addHandler(handler)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield collected
    finally:
        logger.removeHandler(handler)
        collected.extend(str(warning.message) for warning in caught)
        collected[:] = list(dict.fromkeys(collected))  # the same message warned and logged counts once
        for message in collected:
            report(message)


def describeRun(runInfo: Optional[dict]) -> str:
    """What ran, from the output's ``metadata["medsr"]``: model, the precision that ran and the device,
    e.g. "mdrn x2 ran in bf16 on cpu." ("" when nothing is recorded)."""
    if not runInfo:
        return ""
    if runInfo.get("plane") == "through":
        what = f"{runInfo.get('model', '?')} through-plane x{float(runInfo['factor']):.3g} (network x{runInfo['scale']})"
    elif runInfo.get("scale"):
        what = f"{runInfo.get('model', '?')} x{runInfo['scale']}"
    else:
        what = str(runInfo.get("model", "?"))
    precision = runInfo.get("precision") or "unrecorded precision"
    device = f" on {runInfo['device']}" if runInfo.get("device") else ""
    return f"{what} ran in {precision}{device}."


def throughPlaneNotes(runInfo: dict) -> list:
    """One-line notes of a through-plane run, from the output's ``metadata["medsr"]["through_plane"]``: the
    slice thickness when MedSRLib assumed it, a warning when the network output was less consistent with the
    input than cubic B-spline (``projection.suspect``), and what a per-volume adaptation did ([] for other runs)."""
    through = runInfo.get("through_plane") if runInfo.get("plane") == "through" else None
    if not through:
        return []
    notes = []
    if through.get("thickness_assumed"):
        notes.append(f"Slice thickness assumed = slice spacing ({float(through['thickness_mm']):.3g} mm).")
    projection = through.get("projection")
    if projection and projection.get("suspect"):
        notes.append("Warning: the network output was less consistent with the input than cubic B-spline "
                     "interpolation; inspect it before use.")
    adaptation = through.get("adaptation")
    if adaptation:
        notes.append(f"Adapted for {float(adaptation['seconds']):.0f} s ({adaptation['iterations']} steps): "
                     f"{float(adaptation['heldout_gain_db']):+.2f} dB on its own held-back patches"
                     + ("" if adaptation.get("used", True) else
                        "; NOT used: its two orientations disagreed more than the shipped network's, so the output "
                        "is the shipped network's")
                     + (f" (note: {adaptation['caution']})." if adaptation.get("caution") else "."))
    return notes
