"""Export a training checkpoint to the shipped weights format (safetensors + JSON model card).

The network in ``best.pt`` (else ``last.pt``) is rounded to float16 (what
:func:`MedSRLib.models.weights.save_weights` stores), scored with that rounding on the run's whole
validation split under the config's metric convention (and ``basicsr`` when that differs), beside
bicubic, and written to ``MedSRLib/weights/<name>_x<scale>.safetensors`` with its card. The written
file is then loaded back through the registry (sha256 verified) and checked to give the same output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from .config import ConfigError, validate
from .data import list_split, load_eval_images
from .evaluate import bicubic_scores, score_outputs, super_resolve_images
from .loop import read_checkpoint

DATA_DESCRIPTIONS = {
    "covid-ct": "COVID-CT (UCSD-AI4H), official split lists, 8-bit figure images converted to grey",
    "alzheimer": "Alzheimer MRI 4-class set (Kaggle), train/ and test/ folders, 8-bit JPEG",
    "alzheimer-srda": "Demented-MRI 3 classes x 890 (splits/srda_3class_890_seeded.csv, 2136/267/267), 8-bit JPEG",
    "luna16": "LUNA16 CT scans (.mhd/.raw), axial slices, split by scan id",
    "folder": "a folder of 2D slices",
}
NORMALISATIONS = {
    "uint8": "8-bit values / 255",
    "clip": "min(max(x, 0), clip_max) / clip_max",
    "ct": "CT window [-1024, 3071] HU -> [0, 1] (MedSRLib.intensity)",
    "mr": "[0, 99.5th percentile] -> [0, 1] per slice (MedSRLib.intensity)",
    "auto": "8-bit / 255, else MedSRLib.intensity by guessed modality",
}


def find_checkpoint(path: str | Path) -> Path:
    """``path`` itself (a ``.pt`` file), or ``best.pt`` (else ``last.pt``) of a run folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"run folder {path} has no best.pt or last.pt; train first")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    return path


def _scores(outputs: list, images: list, scale: int, convention: str) -> dict[str, Any]:
    ours = score_outputs(outputs, images, scale=scale, convention=convention)
    bic = bicubic_scores(images, scale=scale, convention=convention)
    out = {"convention": convention, "psnr": ours["psnr"], "ssim": ours["ssim"],
           "bicubic_psnr": bic["psnr"], "bicubic_ssim": bic["ssim"]}
    if ours.get("ms_ssim") is not None:
        out.update(ms_ssim=ours["ms_ssim"], bicubic_ms_ssim=bic["ms_ssim"])
    return out


def export(
    checkpoint: str | Path,
    *,
    out: str | Path | None = None,
    split: str = "val",
    max_images: int | None = None,
    data_root: str | None = None,
    progress: bool = False,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write the weights file and card of a checkpoint; returns ``(weights, card, card dict)``."""
    from MedSRLib.models import get_model
    from MedSRLib.models.weights import read_card, save_weights

    path = find_checkpoint(checkpoint)
    ckpt = read_checkpoint(path)
    cfg = yaml.safe_load(ckpt["config"])
    if cfg.get("mode") == "throughplane":  # one multi-factor file, scored against the cubic B-spline
        from .throughplane import export_throughplane

        return export_throughplane(path, out=out)
    if data_root is not None:
        cfg["data"]["root"] = data_root
    validate(cfg)
    spec = get_model(ckpt["model_name"])
    scale = int(ckpt["scale"])
    module = spec.build(scale)
    module.load_state_dict(ckpt["model"])
    with torch.no_grad():  # score exactly what ships: float16-rounded parameters and buffers
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    module.eval()
    target = Path(out) if out is not None else spec.weights_path(scale)
    if target.suffix != ".safetensors":
        target = target / f"{spec.name}_x{scale}.safetensors"

    data = cfg["data"]
    images = load_eval_images(list_split(data, split), data=data, scale=scale, max_images=max_images,
                              min_lr_side=spec.min_lr_size, progress=progress)
    convention = cfg["val"]["convention"]
    outputs = super_resolve_images(module, images)
    metrics = _scores(outputs, images, scale, convention)
    metrics.update(split=split, n_images=len(images), data_range=1.0,
                   normalisation=NORMALISATIONS[data["normalise"]], whole_images=True)
    if convention != "basicsr":
        metrics["basicsr"] = _scores(outputs, images, scale, "basicsr")
    train = cfg["train"]
    card = {
        "name": spec.name,
        "scale": scale,
        "training": {
            "data": f"{DATA_DESCRIPTIONS[data['dataset']]}; train split '{data['train']}' "
                    f"({ckpt.get('n_train_images', '?')} images at least {train['hr_patch']} px)",
            "config": cfg["name"],
            "config_file": f"training/configs/{cfg['name']}.yaml",
            "iterations": int(ckpt["iteration"]),
            "planned_iterations": int(ckpt["planned_iterations"]),
            "wall_time_s": round(float(ckpt["elapsed_s"]), 1),
            "hardware": ckpt["hardware"],
            "checkpoint": path.name,
            "hr_patch": train["hr_patch"],
            "batch": train["batch"],
            "optimizer": {"type": "Adam", **train["optimizer"]},
            "schedule": train["schedule"],
            "loss": train["loss"],
            "augment": train["augment"],
            "normalisation": NORMALISATIONS[data["normalise"]],
            "degradation": "MATLAB bicubic (MedSRLib.resize.degrade), float, not re-quantised",
            "seed": cfg["seed"],
            "precision": "bf16 autocast on CPU, fp32 weights" if train.get("cpu_bf16") else "fp32",
            "init_from": Path(train["init_from"]).name if train.get("init_from") else None,
        },
        "metrics": metrics,
    }
    weights_path, card_path = save_weights(module, target, card=card)
    reloaded = spec.load(scale, weights=weights_path)  # sha256 + shape checks
    probe = torch.from_numpy(images[0].lr[None, None].copy())
    with torch.no_grad():
        if not torch.allclose(reloaded(probe), module(probe), atol=1e-5):
            raise ConfigError(f"{weights_path} does not reproduce the exported network; not shipped")
    return weights_path, card_path, read_card(weights_path)
