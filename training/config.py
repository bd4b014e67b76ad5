"""Training configurations: one YAML file per paper and scale, validated before any work starts.

A config is plain data (``training/configs/<name>.yaml``): the paper's recipe as listed in
``../shared/design/networks.md`` Sections 3.3, 4.3, 5.3, 6.5, 7.3 and 9, or a ``*_cpu`` variant used
for the shipped weights. Command-line overrides (``--iterations``, ``--batch``, ``--time-budget``,
``--data-root``, ``--set key.sub=value``) are applied on top, then :func:`validate` checks the network,
scale, data folder, patch size and every value, raising :class:`ConfigError` with one line.
"""

from __future__ import annotations

import copy
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from MedSRLib.errors import MedSRError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Default of ``$MEDSR_SHARED_DATA`` in config paths (the real data beside the checkout).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: Every key a config may have, with its default (``None`` = unset). Unknown keys are errors.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "model": None,
    "scale": None,
    "seed": 0,
    "description": "",
    "published": None,  # the paper's table in training/published.yaml (e.g. dridsr-covid-ct)
    "mode": "inplane",  # inplane (bicubic pairs, data section) | throughplane (slice-profile pairs, throughplane section)
    "throughplane": {  # mode throughplane only (training.throughplane): pairs made on the fly from fine-pixel slices
        "factors": [2, 8],  # integer factor r drawn uniformly in [min, max] per batch (the net must have them all)
        "thickness": [0.8, 1.0],  # slice-profile FWHM drawn in [a, b] x r HR pixels per batch
        "profile": "gaussian",  # gaussian | rect (MedSRLib.resize.slice_profile_degrade)
        "lr_rows": 16,  # patch rows on the LR (coarse) grid; HR rows = lr_rows x r; columns = train.hr_patch
        "min_std": 0.02,  # redraw (up to 8 times) patches whose HR std is below this (background)
        "sources": [],  # training slices: list of {kind, ...} (training.throughplane.SOURCE_KINDS)
        "val_sources": [],  # validation slices, same format
        "val_factors": [2, 4, 6],  # factors scored at validation (thickness = r), beside cubic B-spline
    },
    "data": {
        "dataset": None,  # covid-ct | alzheimer | alzheimer-srda | luna16 | folder
        "root": None,  # $VARS expanded ($MEDSR_SHARED_DATA: ../shared/data); relative to the working dir
        "train": "train",
        "val": "val",
        "test": "test",
        "normalise": "auto",  # auto | uint8 | clip | ct | mr (see training.data.to_unit)
        "offset": 0.0,  # added to stored values before normalising (DeepLesion 16-bit PNG: -32768 -> HU)
        "clip_max": None,  # normalise: clip -> x = min(max(x, 0), clip_max) / clip_max (MDRN: 2000)
        "slice_step": 1,  # luna16 / volumes: use every n-th axial slice
        "split_fractions": [0.8, 0.1, 0.1],  # luna16 / folder without split folders: by scan / file
    },
    "train": {
        "hr_patch": None,  # HR crop side (BasicSR gt_size); LR patch = hr_patch / scale
        "batch": None,  # global batch (split over DDP processes)
        "iterations": None,  # total iterations, or
        "epochs": None,  # epochs x ceil(epoch_size / batch) iterations
        "epoch_size": None,  # samples per epoch (default: number of training images)
        "patches_per_image": 1,  # random crops per training image per pass over the dataset
        "time_budget": None,  # seconds (or "25m", "2h"): stop and checkpoint when spent
        "augment": {"hflip": True, "rot90": True},
        "loss": "l1",  # l1 | l2 (mean squared error: what PSNR measures) | srda (L1 + lambda1 CE + lambda2 attention MSE)
        "loss_weights": {"diag": 0.0006, "atten": 0.0001},  # SRDA Eq. 5 lambda1, lambda2
        "diagnosis": {},  # SRDA: keywords of MedSRLib.models.srda.SRDADiagnosisNet
        "optimizer": {"lr": None, "betas": [0.9, 0.999], "eps": 1.0e-8},
        "schedule": {"type": "constant", "every": None, "gamma": 0.5, "min_lr": 0.0},
        "amp": True,  # mixed precision on CUDA only (fp16 autocast + grad scaler)
        "cpu_bf16": False,  # bf16 autocast on CPU (3-4x faster on AVX512-BF16; fp32 master weights)
        "init_from": None,  # warm start: weights (.safetensors) or checkpoint (.pt); same-shape tensors only
        "workers": 0,  # DataLoader workers per process
        "threads": None,  # torch.set_num_threads per process (None: leave torch's default)
        "device": "auto",  # auto (cuda:LOCAL_RANK when available, else cpu) | cpu | cuda
        "grad_clip": None,
    },
    "val": {
        "every": 1000,  # iterations between validations (and best checkpoint)
        "convention": "basicsr",  # a MedSRLib.metrics convention: basicsr | srda | dridsr-y
        "max_images": None,  # first n validation images (None: all)
        "max_side": None,  # centre-crop validation HR images to at most this side (None: whole)
    },
    "log": {"root": "runs", "every": 10, "tensorboard": True, "checkpoint_every": 200},
}

SCHEDULES = ("constant", "step")
DATASETS = ("covid-ct", "alzheimer", "alzheimer-srda", "luna16", "folder")
NORMALISATIONS = ("auto", "uint8", "clip", "ct", "mr")
LOSSES = ("l1", "l2", "srda")


class ConfigError(MedSRError):
    """A training config or command-line override is wrong (one line: what, and how to fix it)."""


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """The YAML file for a config name (``dridsr_x4``) or an explicit path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(available_configs())
        raise ConfigError(f"unknown config '{name_or_path}'; available: {known}")
    return candidate


def available_configs() -> list[str]:
    """Names of the shipped configs (``training/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"unknown config key '{where}{key}'; known keys: {', '.join(sorted(base))}")
        if isinstance(base[key], dict) and base[key] and not isinstance(value, Mapping):
            raise ConfigError(f"config key '{where}{key}' must be a mapping; got {value!r}")
        if isinstance(base[key], dict) and base[key]:
            out[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_duration(value: Any) -> float | None:
    """Seconds from ``1500``, ``"1500s"``, ``"25m"``, ``"2h"`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(value))
        if not match:
            raise ConfigError(f"time budget {value!r} is not a duration; use seconds or e.g. 25m, 2h")
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if not seconds > 0:
        raise ConfigError(f"time budget must be positive; got {value!r}")
    return seconds


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``cfg['a']['b'] = value`` for ``dotted = 'a.b'`` (the key must exist in :data:`DEFAULTS`)."""
    parts = dotted.split(".")
    node, defaults = cfg, DEFAULTS
    for part in parts[:-1]:
        if part not in defaults or not isinstance(defaults[part], dict):
            raise ConfigError(f"unknown config key '{dotted}'")
        node, defaults = node[part], defaults[part]
    if parts[-1] not in defaults:
        raise ConfigError(f"unknown config key '{dotted}'; known under it: {', '.join(sorted(defaults))}")
    node[parts[-1]] = value


def load_config(
    name_or_path: str | os.PathLike[str],
    *,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Read a config, fill defaults and apply ``overrides`` (``{"train.batch": 8, ...}``); not validated."""
    path = config_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    cfg = _merge(DEFAULTS, raw, "")
    cfg["name"] = cfg["name"] or path.stem
    for key, value in (overrides or {}).items():
        set_key(cfg, key, value)
    cfg["_path"] = str(path)
    return cfg


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["train.batch=8", "val.every=50"]`` -> ``{"train.batch": 8, ...}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.sub=value; got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_root(root: Any) -> Path | None:
    """A data root from a config: ``$VARS`` expanded (``$MEDSR_SHARED_DATA`` defaults to the
    ``shared/data`` folder beside the checkout), relative paths taken from the working directory."""
    if root in (None, ""):
        return None
    env = {"MEDSR_SHARED_DATA": str(SHARED_DATA), **os.environ}
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), os.path.expanduser(str(root)))
    return Path(text).absolute()


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer; got {value!r}")
    return value


def _positive_float(value: Any, key: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be {'>= 0' if allow_zero else 'positive'}; got {value!r}")
    return float(value)


def _choice(value: Any, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def validate(cfg: dict[str, Any], *, world_size: int = 1, need_data: bool = True) -> dict[str, Any]:
    """Check every value (network, scale, data folder, patch/scale, batch/world size, optimiser, ...).

    Returns the config with ``data.root`` resolved to an absolute path and ``train.time_budget`` in
    seconds. Raises :class:`ConfigError` (or the registry's ``ModelNotFoundError``/``ScaleError``).
    """
    from MedSRLib.metrics import get_convention
    from MedSRLib.models import get_model

    if not cfg.get("model"):
        raise ConfigError(f"config '{cfg.get('name')}' has no 'model'; name a registered network (e.g. dridsr)")
    spec = get_model(cfg["model"])  # ModelNotFoundError lists the registered names
    if not spec.learned:
        raise ConfigError(f"model '{spec.name}' is an interpolation; nothing to train")
    if isinstance(cfg.get("scale"), bool) or not isinstance(cfg.get("scale"), int):
        raise ConfigError(f"scale must be an integer; got {cfg.get('scale')!r}")
    scale = spec.check_scale(cfg["scale"])
    train, data, val = cfg["train"], cfg["data"], cfg["val"]
    _choice(cfg["mode"], "mode", ("inplane", "throughplane"))
    throughplane = cfg["mode"] == "throughplane"
    if throughplane:
        validate_throughplane(cfg, spec, need_data=need_data)
        if world_size > 1:  # each batch trains one factor's tail: DDP's static graph does not hold
            raise ConfigError("mode throughplane trains in one process; run it without torchrun")

    hr_patch = _positive_int(train["hr_patch"], "train.hr_patch")
    if throughplane:
        pass  # hr_patch: the columns of a patch (fine direction); rows come from throughplane.lr_rows
    elif hr_patch % scale:
        raise ConfigError(
            f"train.hr_patch {hr_patch} is not divisible by the scale x{scale}; "
            f"use a multiple of {scale} (e.g. {hr_patch - hr_patch % scale or scale})"
        )
    if not throughplane and hr_patch // scale < max(spec.min_lr_size, 1):
        raise ConfigError(f"LR patch {hr_patch // scale} px is smaller than '{spec.name}' needs ({spec.min_lr_size} px)")
    batch = _positive_int(train["batch"], "train.batch")
    if batch % world_size:
        raise ConfigError(f"train.batch {batch} is not divisible by the {world_size} processes; use a multiple")
    if (train["iterations"] is None) == (train["epochs"] is None):
        raise ConfigError("give exactly one of train.iterations and train.epochs")
    if train["iterations"] is not None:
        _positive_int(train["iterations"], "train.iterations")
    else:
        _positive_int(train["epochs"], "train.epochs")
        if train["epoch_size"] is not None:
            _positive_int(train["epoch_size"], "train.epoch_size")
    _positive_int(train["patches_per_image"], "train.patches_per_image")
    train["time_budget"] = parse_duration(train["time_budget"])
    _choice(train["loss"], "train.loss", LOSSES)
    if train["loss"] == "srda" and spec.network.upper() != "SRDA":
        raise ConfigError(f"train.loss 'srda' needs an SRDA model; '{spec.name}' is {spec.network}")
    opt = train["optimizer"]
    _positive_float(opt["lr"], "train.optimizer.lr")
    betas = opt["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(0 <= float(b) < 1 for b in betas)):
        raise ConfigError(f"train.optimizer.betas must be two numbers in [0, 1); got {betas!r}")
    _positive_float(opt["eps"], "train.optimizer.eps")
    sched = train["schedule"]
    _choice(sched["type"], "train.schedule.type", SCHEDULES)
    if sched["type"] == "step":
        every = _positive_float(sched["every"], "train.schedule.every")
        if every > 1:
            raise ConfigError(f"train.schedule.every is a fraction of the run in (0, 1]; got {every}")
        _positive_float(sched["gamma"], "train.schedule.gamma")
    _positive_float(sched["min_lr"], "train.schedule.min_lr", allow_zero=True)
    _positive_int(train["workers"] + 1, "train.workers + 1")
    _choice(train["device"], "train.device", ("auto", "cpu", "cuda"))
    if train["threads"] is not None:
        _positive_int(train["threads"], "train.threads")
    if train["grad_clip"] is not None:
        _positive_float(train["grad_clip"], "train.grad_clip")
    if not isinstance(train["cpu_bf16"], bool):
        raise ConfigError(f"train.cpu_bf16 is true or false; got {train['cpu_bf16']!r}")
    if train["init_from"] is not None:
        init = Path(str(train["init_from"])).expanduser()
        if not init.is_absolute():
            init = REPO_ROOT / init
        if not init.is_file():
            raise ConfigError(f"train.init_from: {init} does not exist; give a .safetensors weights file or a .pt checkpoint")
        if init.suffix not in (".safetensors", ".pt"):
            raise ConfigError(f"train.init_from must be a .safetensors weights file or a .pt checkpoint; got '{init.name}'")
        train["init_from"] = str(init)

    _positive_int(val["every"], "val.every")
    try:
        val["convention"] = get_convention(val["convention"]).name
    except ValueError as exc:
        raise ConfigError(f"val.convention: {exc}") from None
    for key in ("max_images", "max_side"):
        if val[key] is not None:
            _positive_int(val[key], f"val.{key}")
    if val["max_side"] is not None and val["max_side"] % scale:
        raise ConfigError(f"val.max_side {val['max_side']} is not divisible by the scale x{scale}")
    _positive_int(cfg["log"]["every"], "log.every")
    _positive_int(cfg["log"]["checkpoint_every"], "log.checkpoint_every")

    if throughplane:
        return cfg  # no data section: the throughplane sources name their own folders
    _choice(data["dataset"], "data.dataset", DATASETS)
    _choice(data["normalise"], "data.normalise", NORMALISATIONS)
    if data["normalise"] == "clip":
        _positive_float(data["clip_max"], "data.clip_max")
    _positive_int(data["slice_step"], "data.slice_step")
    fractions = data["split_fractions"]
    if not (isinstance(fractions, (list, tuple)) and len(fractions) == 3 and abs(sum(fractions) - 1) < 1e-6):
        raise ConfigError(f"data.split_fractions must be three fractions (train, val, test) summing to 1; got {fractions!r}")
    root = resolve_root(data["root"])
    if need_data:
        if root is None:
            raise ConfigError("data.root is not set; pass --data-root DIR (the folder of the training data)")
        if not root.is_dir():
            raise ConfigError(f"data folder {root} does not exist; pass --data-root DIR or fix data.root")
    data["root"] = str(root) if root is not None else None
    return cfg


def total_iterations(cfg: Mapping[str, Any], n_train_images: int) -> int:
    """Iterations of the run: ``train.iterations``, or epochs x ceil(epoch_size / batch)."""
    train = cfg["train"]
    if train["iterations"] is not None:
        return int(train["iterations"])
    epoch_size = train["epoch_size"] or n_train_images * train["patches_per_image"]
    return int(train["epochs"]) * max(1, math.ceil(epoch_size / train["batch"]))


#: Kinds of slice sources a through-plane config may list (training.throughplane reads them).
SOURCE_KINDS = ("covid-ct", "alzheimer", "alzheimer-srda", "folder", "volume", "image")


def validate_throughplane(cfg: dict[str, Any], spec: Any, *, need_data: bool = True) -> None:
    """Check the ``throughplane`` section (and that the model is a multi-factor through-plane network)."""
    from MedSRLib.resize import PROFILES

    tp = cfg["throughplane"]
    if not getattr(spec, "multi_scale", False):
        raise ConfigError(f"mode throughplane needs a through-plane model (tp-*); '{spec.name}' is not one")
    factors = tp["factors"]
    if not (isinstance(factors, (list, tuple)) and len(factors) == 2 and all(isinstance(f, int) for f in factors)
            and 2 <= factors[0] <= factors[1]):
        raise ConfigError(f"throughplane.factors must be [min, max] integers >= 2; got {factors!r}")
    missing = [r for r in range(factors[0], factors[1] + 1) if r not in spec.scales]
    if missing:
        raise ConfigError(f"throughplane.factors {factors} include {missing}, which '{spec.name}' has no tail for")
    thick = tp["thickness"]
    if not (isinstance(thick, (list, tuple)) and len(thick) == 2 and 0 < float(thick[0]) <= float(thick[1])):
        raise ConfigError(f"throughplane.thickness must be [a, b] with 0 < a <= b (x factor); got {thick!r}")
    if tp["profile"] not in PROFILES:
        raise ConfigError(f"throughplane.profile must be one of {', '.join(PROFILES)}; got {tp['profile']!r}")
    if isinstance(tp["lr_rows"], bool) or not isinstance(tp["lr_rows"], int) or tp["lr_rows"] < spec.min_lr_size:
        raise ConfigError(f"throughplane.lr_rows must be an integer >= {spec.min_lr_size}; got {tp['lr_rows']!r}")
    vf = tp["val_factors"]
    if not (isinstance(vf, (list, tuple)) and vf and all(isinstance(r, int) and r in spec.scales for r in vf)):
        raise ConfigError(f"throughplane.val_factors must be factors of '{spec.name}' ({spec.scales}); got {vf!r}")
    for key in ("sources", "val_sources"):
        if not isinstance(tp[key], list) or not tp[key]:
            raise ConfigError(f"throughplane.{key} must be a non-empty list of sources ({', '.join(SOURCE_KINDS)})")
        for src in tp[key]:
            if not isinstance(src, Mapping) or src.get("kind") not in SOURCE_KINDS:
                raise ConfigError(f"throughplane.{key}: each source needs kind one of {', '.join(SOURCE_KINDS)}; got {src!r}")
            where = src.get("path") if src["kind"] in ("volume", "image") else src.get("root")
            if where is None:
                raise ConfigError(f"throughplane.{key}: source {src['kind']} needs {'path' if src['kind'] in ('volume', 'image') else 'root'}")
            if need_data and not resolve_root(where).exists():
                raise ConfigError(f"throughplane.{key}: {resolve_root(where)} does not exist; fix the path or MEDSR_SHARED_DATA")
            diagonals = src.get("diagonals", 0)
            if isinstance(diagonals, bool) or not isinstance(diagonals, int) or diagonals < 0 or (diagonals and src["kind"] != "volume"):
                raise ConfigError(f"throughplane.{key}: diagonals (every n-th diagonal plane, 0 = none) must be an integer "
                                  f">= 0 on a volume source; got {diagonals!r} on {src['kind']}")
