"""The training loop: L1 (or SRDA's joint) loss, Adam, the paper's schedule, validation, checkpoints.

One process, or several under ``torchrun`` (``DistributedDataParallel`` + ``DistributedSampler``;
``gloo`` on CPU, ``nccl`` on CUDA): ``torchrun --nproc_per_node 2 -m training train CONFIG``. The
global batch ``train.batch`` is split evenly over the processes, so a run's samples, and its gradients
up to floating-point summation order, do not depend on the number of processes.

Run folder ``<log.root>/<name>/`` (default ``runs/``, ignored by git):

* ``last.pt`` -- everything needed to resume exactly: model, optimiser, scheduler, AMP scaler, RNG
  states (python, numpy, torch, CUDA), iteration, planned iterations, elapsed time, best score.
  ``best.pt`` -- the model with the best validation PSNR. Both hold only tensors and plain Python
  values (``torch.load(..., weights_only=True)`` reads them).
* ``train.csv`` (iteration, epoch, lr, losses, seconds) and ``val.csv`` (PSNR/SSIM of the model and
  of bicubic, with the metric convention); TensorBoard events in ``tb/``; ``config.yaml``;
  ``summary.json`` at the end.

Schedules are fractions of the run (``../shared/design/networks.md`` Section 9: "scale schedules by
iterations actually run"). With ``train.time_budget`` the run stops, checkpointed, when the budget is
spent; after 20 iterations it also fits the planned iterations (and so the schedule) to the budget.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint_model, read_checkpoint  # noqa: F401 (re-exported)
from .config import ConfigError, total_iterations, validate
from .data import PairDataset, list_split, load_eval_images
from .evaluate import bicubic_scores, predictor_for_module, score_images

#: Iterations timed (after the first few) before the planned length is fitted to a time budget.
CALIBRATION_ITERATIONS = 20
TRAIN_FIELDS = ("iteration", "epoch", "lr", "loss", "loss_sr", "loss_diag", "loss_atten", "seconds")
VAL_FIELDS = ("iteration", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "n_images", "convention", "seconds")


# --------------------------------------------------------------------------------------------------
# processes and devices


@dataclass(frozen=True)
class Processes:
    """This process's place in the (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def world_size() -> int:
    """Number of processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def start_processes(device: str) -> Processes:
    """Join the torchrun process group (if any) and pick this process's device."""
    world, rank, local_rank = world_size(), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use auto or cpu")
    dev = torch.device("cuda", local_rank % torch.cuda.device_count()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Processes(rank, world, local_rank, dev)


def _broadcast_float(value: float, procs: Processes) -> float:
    if not procs.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


# --------------------------------------------------------------------------------------------------
# model + loss as one module (what DDP wraps)


class TrainStep(nn.Module):
    """The SR network plus (for SRDA) the diagnosis network; ``forward`` returns the loss terms."""

    def __init__(self, sr: nn.Module, diag: nn.Module | None, *, loss: str, weights: Mapping[str, float]) -> None:
        super().__init__()
        self.sr, self.diag, self.loss = sr, diag, loss
        self.lambda1, self.lambda2 = float(weights.get("diag", 0.0)), float(weights.get("atten", 0.0))

    def forward(self, lr: torch.Tensor, hr: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.loss in ("l1", "l2"):
            if getattr(self.sr, "multi_scale", False):  # through-plane: the factor of this batch's rows
                sr = self.sr(lr, hr.shape[-2] // lr.shape[-2])
            else:
                sr = self.sr(lr)
            l_sr = nn.functional.l1_loss(sr, hr) if self.loss == "l1" else nn.functional.mse_loss(sr.float(), hr.float())
            zero = l_sr.new_zeros(())
            return l_sr, l_sr, zero, zero
        from MedSRLib.models.srda import srda_joint_loss

        sr, w_sr = self.sr.forward_with_attention(lr)
        logits, w_diag = self.diag(sr) if self.diag is not None else (None, None)
        total, parts = srda_joint_loss(
            sr, hr, logits, label, w_sr, w_diag, lambda1=self.lambda1 if self.diag is not None else 0.0,
            lambda2=self.lambda2 if self.diag is not None else 0.0,
        )
        return total, parts["sr"], parts["diag"], parts["atten"]


def build_step(cfg: Mapping[str, Any], n_classes: int) -> TrainStep:
    """The network of ``cfg['model']`` at ``cfg['scale']`` (fresh init) wrapped with its loss."""
    from MedSRLib.models import get_model

    spec = get_model(cfg["model"])
    sr = spec.build(int(cfg["scale"]))
    train = cfg["train"]
    diag = None
    if train["loss"] == "srda":
        weights = train["loss_weights"]
        if n_classes >= 2 and (weights.get("diag", 0) > 0 or weights.get("atten", 0) > 0):
            from MedSRLib.models.srda import diagnosis_net_for

            diag = diagnosis_net_for(spec.name, **{"n_classes": n_classes, **dict(train["diagnosis"])})
    return TrainStep(sr, diag, loss=train["loss"], weights=train["loss_weights"])


def warm_start(model: nn.Module, path: str | Path) -> int:
    """Copy into ``model`` every tensor of ``path`` whose name and shape match (EDSR-style warm start:
    an x3/x4 network from the x2 one; the upsampling tail, whose shapes differ, stays freshly
    initialised). ``path``: a ``.safetensors`` weights file or a checkpoint of this loop. Returns the
    number of tensors copied; :class:`ConfigError` when none match (the wrong network)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        source = load_file(str(path))
    else:
        source = read_checkpoint(path)["model"]
    own = model.state_dict()
    matched = {k: v.to(own[k].dtype) for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError(f"train.init_from: no tensor of {path.name} matches {type(model).__name__}'s names and shapes")
    model.load_state_dict(matched, strict=False)
    return len(matched)


# --------------------------------------------------------------------------------------------------
# schedule, sampler, RNG, checkpoints


class Schedule:
    """Learning-rate factor of iteration ``it``: ``gamma ** floor(it / (every * planned))``, floored at
    ``min_lr / lr``; ``constant`` is 1. ``planned`` may be refitted (time budget) before the first decay."""

    def __init__(self, sched: Mapping[str, Any], base_lr: float, planned: int) -> None:
        self.kind, self.every, self.gamma = sched["type"], sched["every"], float(sched["gamma"])
        self.floor = float(sched["min_lr"]) / base_lr
        self.planned = int(planned)

    def __call__(self, it: int) -> float:
        if self.kind == "constant":
            return 1.0
        step = max(1, int(round(self.every * self.planned)))
        return max(self.gamma ** (it // step), self.floor)


class ResumeSampler(Sampler[int]):
    """A :class:`DistributedSampler`'s order for the current epoch, starting ``start`` samples in."""

    def __init__(self, base: DistributedSampler, start: int) -> None:
        self.base, self.start = base, int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.base)[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.base) - self.start)


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _atomic_save(obj: Mapping[str, Any], path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(dict(obj), tmp)
    os.replace(tmp, path)


def run_dir(cfg: Mapping[str, Any]) -> Path:
    """``<log.root>/<name>`` (relative roots are relative to the working directory)."""
    return Path(cfg["log"]["root"]).absolute() / str(cfg["name"])


def _identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What must match for a checkpoint to be resumed with a config."""
    t = cfg["train"]
    return {"model": cfg["model"], "scale": cfg["scale"], "hr_patch": t["hr_patch"], "batch": t["batch"],
            "loss": t["loss"], "dataset": cfg["data"]["dataset"], "seed": cfg["seed"]}


class _Csv:
    """Append-only CSV log; on resume, rows after the resumed iteration are dropped."""

    def __init__(self, path: Path, fields: tuple[str, ...], keep_until: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if keep_until is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= keep_until]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: Mapping[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: row.get(k) for k in self.fields})


def hardware() -> str:
    """One line describing where the run executes (for logs and model cards)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


# --------------------------------------------------------------------------------------------------
# the trainer


@dataclass
class TrainResult:
    """What a finished (or budget-stopped) run reports."""

    run_dir: Path
    iteration: int
    planned_iterations: int
    elapsed_s: float
    finished: bool  # all planned iterations done, or the time budget spent
    best: dict[str, Any] = field(default_factory=dict)
    last_val: dict[str, Any] = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)


def train(
    cfg: dict[str, Any], *, resume: bool = True, progress: bool | None = None, stop_at: int | None = None,
    trainer_class: type | None = None,
) -> TrainResult:
    """Train ``cfg`` (validated here, before any work); resume from ``last.pt`` when ``resume``.

    ``stop_at`` ends this session at that iteration, checkpointed, without changing the plan (for
    jobs with a wall-time limit: rerun to continue). Under ``torchrun`` every process calls this;
    process 0 logs and checkpoints.
    """
    validate(cfg, world_size=world_size())
    train_cfg = cfg["train"]
    threads = torch.get_num_threads()
    if train_cfg["threads"]:
        torch.set_num_threads(int(train_cfg["threads"]))
    procs = start_processes(train_cfg["device"])
    if trainer_class is None:
        if cfg.get("mode", "inplane") != "inplane":
            raise ConfigError(f"mode {cfg.get('mode')} is trained by training.modes.train (it picks the trainer)")
        trainer_class = _Trainer
    try:
        result = trainer_class(cfg, procs, resume=resume, progress=progress).run(stop_at=stop_at)
        if procs.distributed and dist.is_initialized():
            # every rank finishes before the group goes: a gloo rank torn down while a peer is still
            # checkpointing was seen to abort ("terminate called without an active exception")
            dist.barrier()
        return result
    finally:
        torch.set_num_threads(threads)
        if procs.distributed and dist.is_initialized():
            dist.destroy_process_group()


class _Trainer:
    #: True when each dataset item is a whole (process-local) batch (through-plane: one factor per batch).
    batched_dataset = False

    def __init__(self, cfg: dict[str, Any], procs: Processes, *, resume: bool, progress: bool | None) -> None:
        self.cfg, self.procs = cfg, procs
        self.t, self.v = cfg["train"], cfg["val"]
        self.scale = int(cfg["scale"])
        self.dir = run_dir(cfg)
        self.progress = (sys.stderr.isatty() if progress is None else progress) and procs.main
        seed_everything(int(cfg["seed"]))

        from MedSRLib.models import get_model

        self.spec = get_model(cfg["model"])
        n_classes = self._build_data()

        self.step_module = build_step(cfg, n_classes).to(procs.device)
        self.model = self.step_module.sr
        self.warm_started = 0
        if self.t["init_from"] is not None:
            self.warm_started = warm_start(self.model, self.t["init_from"])
        params = [p for p in self.step_module.parameters() if p.requires_grad]
        opt = self.t["optimizer"]
        self.optimizer = torch.optim.Adam(params, lr=float(opt["lr"]), betas=tuple(float(b) for b in opt["betas"]),
                                          eps=float(opt["eps"]))
        self.schedule = Schedule(self.t["schedule"], float(opt["lr"]), self.total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda it: self.schedule(it))
        self.amp = bool(self.t["amp"]) and procs.device.type == "cuda"
        self.cpu_bf16 = bool(self.t["cpu_bf16"]) and procs.device.type == "cpu"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ddp: nn.Module = self.step_module
        if procs.distributed:
            # static_graph: the same parameters are used every step; some never are (DRIDSR's last
            # IDB forward conv, networks.md 4.2 item 5), which a plain DDP would reject.
            self.ddp = DistributedDataParallel(
                self.step_module, device_ids=[procs.device.index] if procs.device.type == "cuda" else None,
                static_graph=True,
            )
        self.sampler = DistributedSampler(self.dataset, num_replicas=procs.world, rank=procs.rank, shuffle=True,
                                          seed=int(cfg["seed"]), drop_last=True)

        self.iteration, self.elapsed, self.planned_fixed = 0, 0.0, self.t["time_budget"] is None
        self.best: dict[str, Any] = {}
        if resume and (self.dir / "last.pt").is_file():
            self._resume(read_checkpoint(self.dir / "last.pt"))
        elif procs.main:
            for stale in ("last.pt", "best.pt", "summary.json"):
                (self.dir / stale).unlink(missing_ok=True)
        self.bicubic: dict[str, Any] | None = None
        if procs.main:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "config.yaml").write_text(yaml.safe_dump({k: v for k, v in cfg.items() if not k.startswith("_")}, sort_keys=False))
            keep = self.iteration if self.iteration else None  # resumed: drop rows logged after last.pt
            self.train_csv = _Csv(self.dir / "train.csv", TRAIN_FIELDS, keep)
            self.val_csv = _Csv(self.dir / "val.csv", VAL_FIELDS, keep)
            self.tb = None
            if cfg["log"]["tensorboard"]:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tb"), purge_step=self.iteration or None)
            self._say(
                f"{cfg['name']}: {self.spec.name} x{self.scale}, {len(self.dataset.items)} training images "
                f"({self.dataset.n_skipped} smaller than {self.t['hr_patch']} px skipped), {len(self.val_images)} "
                f"validation, batch {self.global_batch} on {procs.world} process(es), {self.total} iterations planned"
                f"{', bf16 autocast' if self.cpu_bf16 else ''}"
                f"{f', warm start: {self.warm_started} tensors from ' + Path(self.t['init_from']).name if self.warm_started else ''}"
                f"{', resuming at ' + str(self.iteration) if self.iteration else ''}; {hardware()}; run folder {self.dir}"
            )

    def _build_data(self) -> int:
        """The training dataset (``self.dataset``, ``self.iters_per_epoch``, ``self.total``) and the
        validation images (process 0); returns the number of classes (SRDA's diagnosis head)."""
        cfg, procs = self.cfg, self.procs
        data = cfg["data"]
        train_split = list_split(data, "train")
        self.global_batch = int(self.t["batch"])
        self.local_batch = self.global_batch // procs.world
        self.dataset = PairDataset(
            train_split, data=data, scale=self.scale, hr_patch=int(self.t["hr_patch"]),
            augment=self.t["augment"], seed=int(cfg["seed"]), progress=self.progress,
        )
        # an epoch: epoch_size samples (default: each usable image patches_per_image times), whole batches
        n_samples = self.t["epoch_size"] or len(self.dataset.items) * self.t["patches_per_image"]
        self.dataset.length = max(1, math.ceil(n_samples / self.global_batch)) * self.global_batch
        self.iters_per_epoch = self.dataset.length // self.global_batch
        self.total = total_iterations(cfg, len(self.dataset.items))
        self.val_images = []
        if procs.main:
            self.val_images = load_eval_images(
                list_split(data, "val"), data=data, scale=self.scale, max_images=self.v["max_images"],
                max_side=self.v["max_side"], min_lr_side=self.spec.min_lr_size, progress=self.progress,
            )

        return len(train_split.classes)

    # ---- helpers
    def _say(self, text: str) -> None:
        if self.procs.main:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def _resume(self, ckpt: dict[str, Any]) -> None:
        if ckpt["identity"] != _identity(self.cfg):
            raise ConfigError(
                f"{self.dir / 'last.pt'} was written by another config ({ckpt['identity']}); "
                "use a new run name (--name) or --fresh"
            )
        self.step_module.load_state_dict(ckpt["step"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.planned = int(ckpt["planned_iterations"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.iteration, self.elapsed = int(ckpt["iteration"]), float(ckpt["elapsed_s"])
        self.planned_fixed, self.best = bool(ckpt["planned_fixed"]), dict(ckpt["best"])

    def _checkpoint(self, name: str) -> None:
        if not self.procs.main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "model_name": self.spec.name,
            "scale": self.scale,
            "identity": _identity(self.cfg),
            "config": yaml.safe_dump({k: v for k, v in self.cfg.items() if not k.startswith("_")}, sort_keys=False),
            "iteration": self.iteration,
            "planned_iterations": self.schedule.planned,
            "planned_fixed": self.planned_fixed,
            "elapsed_s": self.elapsed,
            "best": self.best,
            "hardware": hardware(),
            "n_train_images": len(self.dataset.items),
            "model": self.model.state_dict(),
        }
        if name == "last":
            state.update(step=self.step_module.state_dict(), optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict() if self.amp else {},
                         rng=rng_state())
        _atomic_save(state, self.dir / f"{name}.pt")

    def _validate(self) -> dict[str, Any]:
        """Scores on the validation images (process 0); the others wait at the barrier."""
        result: dict[str, Any] = {}
        if self.procs.main:
            start = time.perf_counter()
            conv = self.v["convention"]
            ours = self._score_val()
            seconds = time.perf_counter() - start
            result = {"iteration": self.iteration, "psnr": ours["psnr"], "ssim": ours["ssim"],
                      "bicubic_psnr": self.bicubic["psnr"], "bicubic_ssim": self.bicubic["ssim"],
                      "n_images": ours["n_images"], "convention": conv, "seconds": round(seconds, 2)}
            self.val_csv.write(result)
            if self.tb is not None:
                self.tb.add_scalar("val/psnr", ours["psnr"], self.iteration)
                self.tb.add_scalar("val/ssim", ours["ssim"], self.iteration)
            self._say(
                f"  val @ {self.iteration}: PSNR {ours['psnr']:.3f} dB / SSIM {ours['ssim']:.4f} "
                f"(bicubic {self.bicubic['psnr']:.3f} / {self.bicubic['ssim']:.4f}; {conv}, "
                f"{ours['n_images']} images, {seconds:.1f} s)"
            )
            if self.iteration > 0 and (not self.best or ours["psnr"] > self.best["psnr"]):
                self.best = {k: result[k] for k in ("iteration", "psnr", "ssim", "bicubic_psnr", "bicubic_ssim", "convention", "n_images")}
                self._checkpoint("best")
        if self.procs.distributed:
            dist.barrier()
        return result

    def _score_val(self) -> dict[str, Any]:
        """``{"psnr", "ssim", "n_images"}`` of the model on the validation images; fills ``self.bicubic``
        (the reference's ``{"psnr", "ssim"}``) on first use."""
        conv = self.v["convention"]
        if self.bicubic is None:
            self.bicubic = bicubic_scores(self.val_images, scale=self.scale, convention=conv)
        return score_images(predictor_for_module(self.model, self.spec, self.scale, device=self.procs.device),
                            self.val_images, convention=conv)

    def _fit_plan_to_budget(self, seconds_per_it: float, val_seconds: float) -> None:
        """Fix the planned iterations so that training plus validations fit the remaining budget."""
        budget = float(self.t["time_budget"])
        per_it = seconds_per_it + val_seconds / int(self.v["every"])
        fitted = self.iteration + int(max(0.0, budget - self.elapsed) / max(per_it, 1e-9))
        planned = int(_broadcast_float(float(min(self.total, max(fitted, self.iteration + 1))), self.procs))
        self.schedule.planned, self.planned_fixed = planned, True
        self._say(f"  time budget {budget:.0f} s: {seconds_per_it:.3f} s/iteration -> {planned} iterations planned")

    # ---- the loop
    def run(self, *, stop_at: int | None = None) -> TrainResult:
        procs, losses = self.procs, []
        last_val: dict[str, Any] = {}
        val_seconds = 0.0
        if self.iteration == 0 and not self.planned_fixed:
            last_val = self._validate()  # baseline, and the validation cost for the budget
            val_seconds = float(last_val.get("seconds") or 0.0)
        session_start, calib_start, first = time.perf_counter(), None, self.iteration
        elapsed_before = self.elapsed
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=self.schedule.planned, initial=self.iteration, desc=self.cfg["name"], dynamic_ncols=True)
        budget = self.t["time_budget"]
        stop = budget_spent = budget is not None and self.elapsed >= float(budget)
        if stop:
            self._say(f"  time budget already spent ({self.elapsed:.0f} s); nothing to do")
        while not stop and self.iteration < self.schedule.planned:
            epoch, offset = divmod(self.iteration, self.iters_per_epoch)
            self.sampler.set_epoch(epoch)
            self.dataset.set_epoch(epoch)
            loader = DataLoader(
                self.dataset, batch_size=None if self.batched_dataset else self.local_batch,
                sampler=ResumeSampler(self.sampler, offset * (1 if self.batched_dataset else self.local_batch)),
                drop_last=not self.batched_dataset, num_workers=int(self.t["workers"]), pin_memory=procs.device.type == "cuda",
            )
            for batch in loader:
                t0 = time.perf_counter()
                terms = self._step(batch)
                self.iteration += 1
                self.elapsed = elapsed_before + (time.perf_counter() - session_start)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms[0]:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                losses.append((self.iteration, terms[0]))
                if self.iteration % int(self.cfg["log"]["every"]) == 0 or self.iteration == 1:
                    self._log(epoch, terms, time.perf_counter() - t0)
                if not self.planned_fixed and calib_start is None and self.iteration >= first + CALIBRATION_ITERATIONS // 4:
                    calib_start = (self.iteration, time.perf_counter())  # the first iterations are slower
                if not self.planned_fixed and calib_start and self.iteration >= calib_start[0] + CALIBRATION_ITERATIONS:
                    rate = (time.perf_counter() - calib_start[1]) / (self.iteration - calib_start[0])
                    self._fit_plan_to_budget(rate, val_seconds)
                    if bar is not None:
                        bar.total = self.schedule.planned
                if self.iteration % int(self.v["every"]) == 0 or self.iteration >= self.schedule.planned:
                    last_val = self._validate()
                    self._checkpoint("last")
                elif self.iteration % int(self.cfg["log"]["checkpoint_every"]) == 0:
                    self._checkpoint("last")
                over = float(budget is not None and self.elapsed >= float(budget))
                if _broadcast_float(over, procs) > 0 and self.iteration < self.schedule.planned:
                    budget_spent = True
                    self._say(f"  time budget spent at iteration {self.iteration}; checkpointed (rerun to continue)")
                    if self.iteration % int(self.v["every"]):
                        last_val = self._validate()
                    self._checkpoint("last")
                    stop = True
                if not stop and stop_at is not None and self.iteration >= stop_at:
                    self._checkpoint("last")
                    stop = True
                if stop or self.iteration >= self.schedule.planned:
                    break
        finished = self.iteration >= self.schedule.planned or budget_spent
        if bar is not None:
            bar.close()
        result = TrainResult(self.dir, self.iteration, self.schedule.planned, self.elapsed, finished,
                             dict(self.best), last_val, losses)
        if procs.main:
            if self.tb is not None:
                self.tb.close()
            summary = {"name": self.cfg["name"], "model": self.spec.name, "scale": self.scale,
                       "iteration": self.iteration, "planned_iterations": self.schedule.planned,
                       "finished": finished, "elapsed_s": round(self.elapsed, 1), "best": self.best,
                       "hardware": hardware(), "processes": procs.world}
            (self.dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return result

    def _step(self, batch: Mapping[str, torch.Tensor]) -> list[float]:
        dev = self.procs.device
        lr, hr, label = (batch[k].to(dev, non_blocking=True) for k in ("lr", "hr", "label"))
        self.ddp.train()
        if self.amp:
            autocast = torch.autocast("cuda", dtype=torch.float16)
        elif self.cpu_bf16:  # no scaler: bf16 has fp32's exponent range
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        else:
            autocast = nullcontext()
        with autocast:
            terms = self.ddp(lr, hr, label)
        terms = tuple(t.float() for t in terms)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms[0]).backward()
        if self.t["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.step_module.parameters(), float(self.t["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        values = torch.stack([t.detach().float() for t in terms])
        if self.procs.distributed:
            dist.all_reduce(values)
            values /= self.procs.world
        return [float(v) for v in values.cpu()]

    def _log(self, epoch: int, terms: list[float], seconds: float) -> None:
        if not self.procs.main:
            return
        lr = self.scheduler.get_last_lr()[0]
        row = {"iteration": self.iteration, "epoch": epoch, "lr": lr, "loss": terms[0], "loss_sr": terms[1],
               "loss_diag": terms[2], "loss_atten": terms[3], "seconds": round(seconds, 4)}
        self.train_csv.write(row)
        if self.tb is not None:
            self.tb.add_scalar("train/loss", terms[0], self.iteration)
            self.tb.add_scalar("train/lr", lr, self.iteration)
        if not self.progress:
            self._say(
                f"  it {self.iteration}/{self.schedule.planned} ep {epoch} loss {terms[0]:.5f} lr {lr:.2e} "
                f"{seconds:.2f} s/it, {self.elapsed / 60:.1f} min"
            )
