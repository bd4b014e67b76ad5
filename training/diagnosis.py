"""SRDA's Table III experiment: is a super-resolved image easier to diagnose?

Wang et al. (ICME 2023, Section III-D, Table III) train a ResNet-50 classifier on the images each
method produces (LR, RCAN, ..., SRDA) and report its test accuracy (Demented-MRI: LR 0.6515, RCAN
0.7083, SRDA 0.7348). We repeat it on the same 3-class protocol (``alzheimer-srda`` split: 2,136
train / 267 validation / 267 test) with the inputs we have:

* ``lr``: the LR images themselves (``MedSRLib.resize.degrade`` of HR by the scale, 52 x 44 px);
* ``bicubic``: LR upsampled with MATLAB bicubic (``MedSRLib.resize.imresize``);
* a registered model name (e.g. ``srda-small``): that network's output from its shipped weights;
* ``hr``: the original images (the upper reference, not in the paper's table).

The classifier is :class:`MedSRLib.models.srda.SRDADiagnosisNet` with ``attention_at=None``: a plain
ResNet-50 (bottleneck 3-4-6-3, BN, ReLU, 1 input channel, 3 classes). The paper gives no recipe for
this experiment; ours is the same for every input kind (:class:`Recipe`): AdamW, cosine schedule,
horizontal flips, the epoch with the best validation accuracy is scored on the test split. Width
1/4 by default (1.5M parameters, 1/16 of the FLOPs: what two CPU cores train in minutes per input
kind; ``--width 1`` is the full ResNet-50).

Resumable: each kind checkpoints every epoch (``<out>/<kind>/last.pt``) and writes
``<out>/<kind>/result.json`` when done; a rerun skips finished kinds and continues unfinished ones.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .config import ConfigError, load_config, validate
from .data import list_split, load_hr

#: The published Table III (Demented-MRI column), networks.md Section 12.4.
PAPER_ACCURACY = {"LR": 0.6515, "RCAN": 0.7083, "SRDA": 0.7348}


@dataclass(frozen=True)
class Recipe:
    """The classifier's training recipe (the same for every input kind).

    Attributes: ``width`` ResNet-50 channel multiplier (1 = full); ``epochs``; ``batch`` images per
    step; ``lr`` peak AdamW learning rate (cosine to 0); ``weight_decay``; ``seed`` (weights and data
    order); ``bf16`` autocast on CPU (fp32 master weights); ``threads`` torch threads (None: default).
    """

    width: float = 0.25
    epochs: int = 10
    batch: int = 32
    lr: float = 1.0e-3
    weight_decay: float = 1.0e-4
    seed: int = 0
    bf16: bool = True
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer; got {value!r}")
        for name in ("width", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive; got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0; got {self.weight_decay!r}")


@dataclass
class LabelledImages:
    """A split's images as one float32 array ``(n, H, W)`` in [0, 1] and int64 labels ``(n,)``."""

    images: np.ndarray
    labels: np.ndarray


# --------------------------------------------------------------------------------------------------
# inputs


def _hr_and_lr(
    data: Mapping[str, Any], split: str, scale: int, max_images: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from MedSRLib.resize import degrade, modcrop

    items = list_split(data, split).items[: max_images or None]
    hr = np.stack([modcrop(load_hr(item, data), scale) for item in items]).astype(np.float32)
    lr = np.asarray(degrade(hr, scale=scale), dtype=np.float32)
    return hr, lr, np.array([item.label for item in items], dtype=np.int64)


def inputs_for(
    kind: str, splits: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, scale: int
) -> dict[str, LabelledImages]:
    """Each split's ``(hr, lr, labels)`` as the classifier of input ``kind`` sees it (a network is
    loaded once for all splits)."""
    if kind in ("hr", "lr"):
        return {name: LabelledImages(hr if kind == "hr" else lr, labels) for name, (hr, lr, labels) in splits.items()}
    if kind == "bicubic":
        from MedSRLib.resize import imresize

        return {name: LabelledImages(np.clip(np.asarray(imresize(lr, scale=scale), dtype=np.float32), 0.0, 1.0), labels)
                for name, (_, lr, labels) in splits.items()}
    from MedSRLib.engine import EngineOptions, Predictor
    from MedSRLib.models import get_model

    spec = get_model(kind)
    if not spec.has_weights(scale):
        raise ConfigError(f"input kind '{kind}': no shipped weights at x{scale}; use lr, bicubic, hr or a model with weights")
    predictor = Predictor(spec, scale, options=EngineOptions(device="cpu", precision="fp32"))
    return {name: LabelledImages(np.clip(predictor.run(lr), 0.0, 1.0).astype(np.float32), labels)
            for name, (_, lr, labels) in splits.items()}


def make_inputs(
    kind: str, data: Mapping[str, Any], split: str, *, scale: int, max_images: int | None = None
) -> LabelledImages:
    """The images of ``split`` (the first ``max_images``) as the classifier of input ``kind`` sees them."""
    return inputs_for(kind, {split: _hr_and_lr(data, split, scale, max_images)}, scale=scale)[split]


# --------------------------------------------------------------------------------------------------
# classifier


def build_classifier(recipe: Recipe, n_classes: int) -> nn.Module:
    """A plain ResNet-50 at ``recipe.width`` (SRDADiagnosisNet without its attention)."""
    from MedSRLib.models.srda import SRDADiagnosisNet

    return SRDADiagnosisNet(n_classes=n_classes, width_mult=recipe.width, attention_at=None)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, *, batch: int = 64) -> np.ndarray:
    """Predicted class per image (fp32, eval mode)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(images[start : start + batch])[:, None]
        out.append(model(x)[0].argmax(1).numpy())
    return np.concatenate(out)


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> list[list[int]]:
    """``m[true][predicted]`` counts."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (labels, predicted), 1)
    return m.tolist()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train_classifier(
    train: LabelledImages,
    val: LabelledImages,
    test: LabelledImages,
    *,
    recipe: Recipe,
    n_classes: int,
    checkpoint: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on ``train``, pick the epoch with the best ``val`` accuracy, score it on ``test``.

    Resumes from ``checkpoint`` (written after every epoch) when it exists. Returns the accuracies,
    the test confusion matrix and the per-epoch history.
    """
    torch.manual_seed(recipe.seed)
    model = build_classifier(recipe, n_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(train.images) / recipe.batch)
    total = steps_per_epoch * recipe.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    state: dict[str, Any] = {"epoch": 0, "best_val": -1.0, "best_epoch": 0, "best_model": None, "history": [], "seconds": 0.0}
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved["recipe"] != asdict(recipe):
            raise ConfigError(f"{checkpoint} was written with another recipe; delete it or use the same options")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        state = saved["state"]
        log(f"  resuming after epoch {state['epoch']}")
    x_all = torch.from_numpy(train.images)[:, None]
    y_all = torch.from_numpy(train.labels)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16)
    loss_fn = nn.CrossEntropyLoss()
    while state["epoch"] < recipe.epochs:
        epoch = state["epoch"]
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch)  # same order on resume
        order = torch.randperm(len(x_all), generator=generator)
        flips = torch.rand(len(x_all), generator=generator) < 0.5
        model.train()
        losses = []
        for start in range(0, len(order), recipe.batch):
            idx = order[start : start + recipe.batch]
            x = x_all[idx].clone()
            flip = flips[idx]
            x[flip] = x[flip].flip(-1)  # left-right flip (axial brain slices)
            with autocast:
                logits = model(x)[0]
            loss = loss_fn(logits.float(), y_all[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        val_acc = float(np.mean(predict(model, val.images) == val.labels))
        state["epoch"] = epoch + 1
        state["seconds"] += time.perf_counter() - started
        state["history"].append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_acc": val_acc})
        if val_acc > state["best_val"]:
            state.update(best_val=val_acc, best_epoch=epoch + 1, best_model={k: v.clone() for k, v in model.state_dict().items()})
        log(f"  epoch {epoch + 1}/{recipe.epochs}: loss {np.mean(losses):.4f}, val acc {val_acc:.4f} "
            f"(best {state['best_val']:.4f} @ {state['best_epoch']}), {time.perf_counter() - started:.0f} s")
        if checkpoint is not None:
            _atomic_save({"recipe": asdict(recipe), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "state": state}, checkpoint)
    last_test = float(np.mean(predict(model, test.images) == test.labels))
    model.load_state_dict(state["best_model"])
    predicted = predict(model, test.images)
    return {
        "test_acc": float(np.mean(predicted == test.labels)),
        "test_acc_last_epoch": last_test,
        "val_acc": state["best_val"],
        "best_epoch": state["best_epoch"],
        "confusion_test": confusion(test.labels, predicted, n_classes),
        "train_seconds": state["seconds"],
        "history": state["history"],
    }


# --------------------------------------------------------------------------------------------------
# experiment and table


def run_experiment(
    kinds: Sequence[str],
    *,
    out_dir: Path,
    recipe: Recipe = Recipe(),
    config: str = "srda_x4_cpu",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and score one classifier per input kind (skipping kinds with a ``result.json``)."""
    cfg = validate(load_config(config))
    data, scale = cfg["data"], int(cfg["scale"])
    if data["dataset"] != "alzheimer-srda":
        raise ConfigError(f"the diagnosis experiment needs the labelled 'alzheimer-srda' data; config '{config}' uses {data['dataset']}")
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    classes = list_split(data, "test").classes
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # read and degraded once for all kinds
    results = []
    for kind in kinds:
        folder = out_dir / kind
        folder.mkdir(parents=True, exist_ok=True)
        done = folder / "result.json"
        if done.is_file():
            saved = json.loads(done.read_text())
            if saved.get("recipe") == asdict(recipe):
                log(f"== {kind}: done before (test acc {saved['test_acc']:.4f})")
                results.append(saved)
                continue
        log(f"== {kind}: building inputs (x{scale}, {config})")
        started = time.perf_counter()
        if not pairs:
            pairs = {s: _hr_and_lr(data, s, scale, None) for s in ("train", "val", "test")}
        splits = inputs_for(kind, pairs, scale=scale)
        log(f"  {len(splits['train'].images)} / {len(splits['val'].images)} / {len(splits['test'].images)} images of "
            f"{splits['train'].images.shape[1]}x{splits['train'].images.shape[2]} px in {time.perf_counter() - started:.0f} s")
        result = train_classifier(splits["train"], splits["val"], splits["test"], recipe=recipe, n_classes=len(classes),
                                  checkpoint=folder / "last.pt", log=log)
        result.update(kind=kind, classes=list(classes), scale=scale, config=config, recipe=asdict(recipe),
                      image_size=list(splits["train"].images.shape[1:]), torch=torch.__version__)
        done.write_text(json.dumps(result, indent=1))
        log(f"== {kind}: test acc {result['test_acc']:.4f} (val {result['val_acc']:.4f}, epoch {result['best_epoch']})")
        results.append(result)
    return results


def _label(kind: str) -> str:
    return {"lr": "LR", "bicubic": "Bicubic", "hr": "HR (original images)"}.get(kind, f"{kind} (ours)")


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """SRDA's Table III layout (Demented-MRI column): test accuracy per input, the paper's beside."""
    if not results:
        return ""
    r0 = results[0]
    recipe = r0["recipe"]
    paper_of = {"lr": PAPER_ACCURACY["LR"], "srda-small": PAPER_ACCURACY["SRDA"], "srda": PAPER_ACCURACY["SRDA"]}
    lines = [
        "### SRDA Table III: diagnosis accuracy of a ResNet-50 trained on each method's images (Demented-MRI, x4)",
        "",
        "| input | image size | test ACC (ours) | test ACC (paper) | val ACC (ours) | best epoch | train time |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        paper = paper_of.get(r["kind"])
        lines.append(f"| {_label(r['kind'])} | {r['image_size'][0]}x{r['image_size'][1]} | {r['test_acc']:.4f} | {'–' if paper is None else f'{paper:.4f}'} | "
                     f"{r['val_acc']:.4f} | {r['best_epoch']} | {r['train_seconds'] / 60:.1f} min |")
    lines.append(f"| RCAN (paper only) | – | – | {PAPER_ACCURACY['RCAN']:.4f} | – | – | – |")
    lines += [
        "",
        f"* Classifier: plain ResNet-50 (bottleneck 3-4-6-3) at width {recipe['width']:g} "
        f"(`SRDADiagnosisNet(attention_at=None, width_mult={recipe['width']:g})`), trained from scratch for each input "
        f"kind with the same recipe: AdamW lr {recipe['lr']:g} (cosine), weight decay {recipe['weight_decay']:g}, batch "
        f"{recipe['batch']}, {recipe['epochs']} epochs, left-right flips, seed {recipe['seed']}, "
        f"{'bf16 autocast' if recipe['bf16'] else 'fp32'}; the epoch with the best validation accuracy is tested.",
        f"* Data: SRDA's 3-class protocol ({', '.join(r0['classes'])}; `splits/srda_3class_890_seeded.csv`), "
        f"LR = MATLAB-bicubic x{r0['scale']} degradation "
        "(`MedSRLib.resize.degrade`); SR images from the shipped weights; 267 test images (one image = 0.37 %).",
        "* Paper: Wang et al., ICME 2023, Table III, Demented-MRI column (their ResNet-50 recipe is not given).",
        "* One seed per row: the spread between seeds was not measured (CPU time), so differences of a few "
        "points between rows are not established; rows whose best epoch is the last were still improving.",
        "* Made with `python -m training diagnosis` (training/diagnosis.py).",
    ]
    return "\n".join(lines) + "\n"


def load_results(out_dir: Path) -> list[dict[str, Any]]:
    """The finished kinds' results under ``out_dir`` (LR first, then bicubic, networks, HR)."""
    found = [json.loads(p.read_text()) for p in sorted(Path(out_dir).glob("*/result.json"))]
    order = {"lr": 0, "bicubic": 1, "hr": 3}
    return sorted(found, key=lambda r: (order.get(r["kind"], 2), r["kind"]))
