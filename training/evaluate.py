"""Scoring and the papers' test protocols.

:func:`score_images` runs a network on whole LR images and scores it and bicubic against the HR
images with one :mod:`MedSRLib.metrics` convention (per-image scores, then the mean: every paper's
averaging). :func:`paper_table` reproduces a paper's test protocol for a trained checkpoint or weights
file and lays the result out like the paper's table: the bicubic row, our row, and the published
numbers (``training/published.yaml``, from ``../shared/design/networks.md`` Section 12) beside them.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from .checkpoint import load_checkpoint_model
from .config import ConfigError
from .data import EvalImage, list_split, load_eval_images

PUBLISHED = Path(__file__).resolve().parent / "published.yaml"


def _mean(rows: Sequence[Mapping[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def bicubic_scores(images: Sequence[EvalImage], *, scale: int, convention: str) -> dict[str, Any]:
    """Mean scores of MATLAB-bicubic upsampling of each LR image (the tables' "Bicubic" row)."""
    from MedSRLib.resize import imresize

    outputs = [np.clip(imresize(im.lr.astype(np.float64), scale=scale), 0.0, 1.0) for im in images]
    return score_outputs(outputs, images, scale=scale, convention=convention)


def _summary(rows: list[dict[str, Any]], convention: str) -> dict[str, Any]:
    out: dict[str, Any] = {"convention": convention, "n_images": len(rows), "per_image": rows}
    for key in ("psnr", "ssim", "ms_ssim"):
        out[key] = _mean(rows, key)
    return out


def predictor_for_module(module: nn.Module, spec: Any, scale: int, *, device: torch.device | str = "cpu") -> Any:
    """A :class:`MedSRLib.engine.Predictor` (fp32) running a deep copy of ``module`` (the network being
    trained, or one loaded from a checkpoint) with the model's inference rewrites applied to the copy:
    validation scores what inference will run, and ``module`` itself is left untouched."""
    import copy

    from MedSRLib.engine import EngineOptions, Predictor

    inner = getattr(module, "module", module) if type(module).__name__ == "DistributedDataParallel" else module
    return Predictor(spec, int(scale), module=copy.deepcopy(inner).float(),
                     options=EngineOptions(device=str(device), precision="fp32"))


def super_resolve_images(
    predictor: Any,
    images: Sequence[EvalImage],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """Each whole LR image run through ``predictor`` (a :class:`MedSRLib.engine.Predictor`), clipped
    to [0, 1] (as saving an image would), float64 ``(s h, s w)``."""
    outputs = []
    for k, im in enumerate(images):
        outputs.append(np.clip(predictor.predict(np.ascontiguousarray(im.lr, dtype=np.float32)).astype(np.float64), 0.0, 1.0))
        if progress is not None:
            progress(k + 1, len(images))
    return outputs


def score_outputs(outputs: Sequence[np.ndarray], images: Sequence[EvalImage], *, scale: int, convention: str) -> dict[str, Any]:
    """Mean PSNR/SSIM (and MS-SSIM when the convention has it) of SR ``outputs`` against the HR images."""
    from MedSRLib.metrics import evaluate_pair

    rows = [
        {"image": im.name, **evaluate_pair(sr, im.hr.astype(np.float64), scale=scale, convention=convention)}
        for sr, im in zip(outputs, images)
    ]
    return _summary(rows, convention)


def score_images(
    predictor: Any,
    images: Sequence[EvalImage],
    *,
    convention: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """:func:`score_outputs` of :func:`super_resolve_images` (the model's row of a table)."""
    outputs = super_resolve_images(predictor, images, progress=progress)
    return score_outputs(outputs, images, scale=predictor.scale, convention=convention)


def published(paper: str) -> dict[str, Any]:
    """The published table of ``paper`` (a key of ``training/published.yaml``)."""
    tables = yaml.safe_load(PUBLISHED.read_text())
    if paper not in tables:
        raise ConfigError(f"no published table for '{paper}'; known: {', '.join(sorted(tables))}")
    return tables[paper]


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(
    *,
    title: str,
    scale: int,
    ours: Mapping[str, Any],
    bicubic: Mapping[str, Any],
    model_name: str,
    reference: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> str:
    """A markdown table laid out like the paper's: Bicubic and model rows, ours beside the published."""
    columns = ["psnr", "ssim"] + (["ms_ssim"] if ours.get("ms_ssim") is not None else [])
    head = " | ".join(f"{c.upper().replace('_', '-')} (ours) | {c.upper().replace('_', '-')} (paper)" for c in columns)
    lines = [f"### {title}", "", f"| x{scale} | {head} |", "|---" * (1 + 2 * len(columns)) + "|"]
    paper_rows = reference.get("rows", {})
    for label, row, paper_key in (("Bicubic", bicubic, "Bicubic"), (model_name, ours, reference.get("model", ""))):
        paper_row = paper_rows.get(paper_key, {}).get(f"x{scale}", {}) if paper_key else {}
        cells = []
        for c in columns:
            digits = 2 if c == "psnr" else 4
            cells += [_fmt(row.get(c), digits), _fmt(paper_row.get(c), digits)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"* {n}" for n in notes]
    return "\n".join(lines) + "\n"


def paper_table(
    cfg: Mapping[str, Any],
    *,
    weights: str | Path | None = None,
    checkpoint: str | Path | None = None,
    split: str = "test",
    paper: str | None = None,
    max_images: int | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Run a paper's test protocol for the config's model and return ``(markdown, results)``.

    Exactly one of ``weights`` (a ``.safetensors`` file with its card) and ``checkpoint`` (a training
    ``best.pt``/``last.pt``) gives the trained network. The metric convention is the config's
    ``val.convention`` (the paper's; see ``../shared/design/networks.md`` Section 11).
    """
    from MedSRLib.models import get_model

    if (weights is None) == (checkpoint is None):
        raise ConfigError("give exactly one of --weights and --checkpoint")
    spec = get_model(cfg["model"])
    scale = int(cfg["scale"])
    from MedSRLib.engine import EngineOptions, Predictor

    options = EngineOptions(device=str(device), precision="fp32")
    if weights is not None:
        predictor = Predictor(spec, scale, weights=weights, options=options)
    else:
        predictor = Predictor(spec, scale, module=load_checkpoint_model(checkpoint, spec=spec, scale=scale), options=options)
    data, convention = cfg["data"], cfg["val"]["convention"]
    images = load_eval_images(
        list_split(data, split), data=data, scale=scale, max_images=max_images, min_lr_side=spec.min_lr_size, progress=progress
    )
    ours = score_images(predictor, images, convention=convention)
    bic = bicubic_scores(images, scale=scale, convention=convention)
    if not (paper or cfg.get("published")):
        raise ConfigError(f"config '{cfg['name']}' names no published table; pass --paper (e.g. dridsr-covid-ct)")
    reference = published(paper or cfg["published"])
    notes = [
        f"Ours: {spec.name} x{scale}, {'weights ' + Path(weights).name if weights else 'checkpoint ' + str(checkpoint)}; "
        f"{len(images)} {data['dataset']} {split} images ({data['normalise']} normalisation to [0, 1]).",
        f"Metric convention `{convention}` (MedSRLib.metrics); degradation MATLAB bicubic (MedSRLib.resize.degrade).",
        f"Paper: {reference.get('source', '')}",
        *reference.get("notes", []),
        f"Hardware: {platform.processor() or platform.machine()}, torch {torch.__version__}.",
    ]
    table = markdown_table(
        title=f"{reference.get('title', spec.network)} x{scale}",
        scale=scale,
        ours=ours,
        bicubic=bic,
        model_name=spec.name,
        reference=reference,
        notes=notes,
    )
    return table, {"model": ours, "bicubic": bic, "n_images": len(images), "convention": convention}


# --------------------------------------------------------------------------------------------------
# RESULTS.md: every shipped model on the papers' test protocols, grouped like the papers' tables

TABLES = Path(__file__).resolve().parent / "tables.yaml"
#: The targets of the weights issue: minimum PSNR gain over bicubic on the test split, per scale.
TARGET_GAIN_DB = {2: 1.0, 3: 0.5, 4: 0.5}


def _columns(convention: str) -> list[str]:
    from MedSRLib.metrics import get_convention

    return ["psnr", "ssim"] + (["ms_ssim"] if get_convention(convention).ms_ssim else [])


def _row(label: str, scores: Mapping[int, Mapping[str, Any] | None], scales: Sequence[int], columns: Sequence[str]) -> str:
    cells = []
    for s in scales:
        row = scores.get(s) or {}
        cells += [_fmt(row.get(c), 2 if c == "psnr" else 4) for c in columns]
    return f"| {label} | " + " | ".join(cells) + " |"


def results_markdown(
    *,
    split: str | None = None,
    max_images: int | None = None,
    tables: Path = TABLES,
    log: Callable[[str], None] = print,
) -> tuple[str, list[dict[str, Any]]]:
    """Score every table of ``tables`` (see ``training/tables.yaml``) and lay them out as markdown.

    Returns ``(markdown, gains)`` where ``gains`` lists, per shipped model and scale, its test PSNR,
    bicubic's on the same images, and whether it meets :data:`TARGET_GAIN_DB`.
    """
    import time

    from MedSRLib.engine import EngineOptions, Predictor
    from MedSRLib.models import get_model

    from .config import load_config, validate

    specs = yaml.safe_load(Path(tables).read_text())
    cache: dict[tuple[Any, ...], list[np.ndarray]] = {}
    sections, gains = [], []
    for spec in specs:
        started = time.perf_counter()
        cfg = validate(load_config(spec["data_config"]))
        data, convention, the_split = cfg["data"], spec["convention"], split or spec["split"]
        scales = [int(s) for s in spec["scales"]]
        columns = _columns(convention)
        rows: dict[str, dict[int, dict[str, Any] | None]] = {}
        counts: dict[int, int] = {}
        for scale in scales:
            models = [m for m in spec["models"] if get_model(m).has_weights(scale)]
            min_lr = max([get_model(m).min_lr_size for m in models] or [1])
            images = load_eval_images(list_split(data, the_split), data=data, scale=scale, max_images=max_images, min_lr_side=min_lr)
            counts[scale] = len(images)
            for name in [*spec.get("baselines", ["bicubic"]), *models]:
                key = (data["dataset"], the_split, scale, name, tuple(im.name for im in images))
                if key not in cache:
                    predictor = Predictor(name, scale, options=EngineOptions(device="cpu", precision="fp32"))
                    cache[key] = super_resolve_images(predictor, images)
                scores = score_outputs(cache[key], images, scale=scale, convention=convention)
                rows.setdefault(name, {})[scale] = scores
                log(f"  {spec['title'][:40]}: {name} x{scale}: {scores['psnr']:.2f} dB / {scores['ssim']:.4f}")
        reference = published(spec["published"]) if spec.get("published") else None
        head = " | ".join(f"x{s} {c.upper().replace('_', '-')}" for s in scales for c in columns)
        lines = [f"### {spec['title']}", "", f"| method | {head} |", "|---" * (1 + len(scales) * len(columns)) + "|"]
        for name, scores in rows.items():
            learned = get_model(name).learned
            label = f"{name} (ours)" if learned else {"bicubic": "Bicubic (ours)", "nearest": "Nearest (ours)"}.get(name, name)
            lines.append(_row(label, scores, scales, columns))
        if reference is not None:
            for paper_row in spec.get("paper_rows", []):
                published_row = reference["rows"].get(paper_row, {})
                lines.append(_row(f"{paper_row} (paper)", {s: published_row.get(f"x{s}") for s in scales}, scales, columns))
        lines.append("")
        for scale in scales:
            bic = rows["bicubic"][scale]["psnr"]
            parts = []
            for name, scores in rows.items():
                if not get_model(name).learned or scores.get(scale) is None:
                    continue
                gain = scores[scale]["psnr"] - bic
                parts.append(f"{name} {gain:+.2f} dB")
                gains.append({"table": spec["title"], "model": name, "scale": scale, "psnr": scores[scale]["psnr"],
                              "bicubic_psnr": bic, "gain_db": gain, "target_db": TARGET_GAIN_DB.get(scale),
                              "n_images": counts[scale], "convention": convention})
            paper = ""
            if reference is not None:
                ref_rows = reference["rows"]
                ours_paper = ref_rows.get(reference.get("model", ""), {}).get(f"x{scale}")
                bic_paper = ref_rows.get("Bicubic", {}).get(f"x{scale}")
                if ours_paper and bic_paper:
                    paper = f"; the paper's {reference['model']}: {ours_paper['psnr'] - bic_paper['psnr']:+.2f} dB over its Bicubic"
            lines.append(f"* x{scale}, {counts[scale]} {data['dataset']} {the_split} images: gain over bicubic (PSNR): "
                         + (", ".join(parts) or "no shipped model") + paper + ".")
        lines.append(f"* Metric convention `{convention}` (MedSRLib.metrics); LR = MATLAB-bicubic degradation "
                     "(MedSRLib.resize.degrade) of each whole HR image; networks run in fp32 on whole LR images.")
        if reference is not None:
            lines.append(f"* Paper rows: {reference.get('source', '')}.")
        lines += [f"* {n}" for n in spec.get("notes", [])]
        lines.append(f"* Scored in {time.perf_counter() - started:.0f} s.")
        sections.append("\n".join(lines) + "\n")
    return "\n".join(sections), gains


def targets_markdown(gains: Sequence[Mapping[str, Any]]) -> str:
    """One line per shipped model and scale: its best test-split gain over bicubic against the target."""
    best: dict[tuple[str, int], Mapping[str, Any]] = {}
    for g in gains:
        key = (g["model"], g["scale"])
        if g["convention"] in ("basicsr", "dridsr-y") and (key not in best or g["convention"] == "basicsr"):
            best[key] = g
    lines = ["### Targets: every shipped model beats bicubic on its held-out test split", "",
             "| model | scale | test PSNR | bicubic | gain | target | met |", "|---|---|---|---|---|---|---|"]
    for (model, scale), g in sorted(best.items()):
        target = g["target_db"]
        met = "–" if target is None else ("yes" if g["gain_db"] >= target else "**no**")
        lines.append(f"| {model} | x{scale} | {g['psnr']:.2f} | {g['bicubic_psnr']:.2f} | {g['gain_db']:+.2f} dB | "
                     f"{'–' if target is None else f'>= {target:g} dB'} | {met} |")
    lines += ["", "* Gains from the tables above (BasicSR convention for MR, the DRIDSR Y convention for COVID-CT); "
              "targets: at least 1 dB at x2 and 0.5 dB at x3/x4."]
    return "\n".join(lines) + "\n"
