"""Export a training checkpoint to the shipped weights format (safetensors + JSON model card).

The card follows :mod:`MedSRLib.models.cards` (version 2): :func:`card_sections` fills the licence,
use, input specification, training data, the paper's schedule, evaluation, limitations and failure
modes from the config and the facts kept here per dataset (:data:`DATASETS`) and per paper
(:data:`REFERENCES`); a new dataset or a through-plane network adds its entry here.

The network in ``best.pt`` (else ``last.pt``) is rounded to float16 (what
:func:`MedSRLib.models.weights.save_weights` stores), scored with that rounding on the run's whole
validation split under the config's metric convention (and ``basicsr`` when that differs), beside
bicubic, and written to ``MedSRLib/weights/<name>_x<scale>.safetensors`` with its card. The written
file is then loaded back through the registry (sha256 verified) and checked to give the same output.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml

from .config import SHARED_DATA, ConfigError, config_path, load_config, total_iterations, validate
from .data import list_split, load_eval_images
from .checkpoint import read_checkpoint
from .evaluate import bicubic_scores, predictor_for_module, score_outputs, super_resolve_images

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


#: The weights' licence: MedSR's own (pyproject.toml), which ships them.
WEIGHTS_LICENCE = {
    "licence": "Apache-2.0",
    "note": "The licence of MedSR (pyproject.toml), which ships these weights; it covers the weights file, "
            "not the training images, whose terms follow. Whether those terms allow uses beyond research has "
            "not been established, so treat the weights as research-only.",
}

#: Full references per network (DOI only where the paper's own text gives it).
REFERENCES: dict[str, dict[str, str | None]] = {
    "IDMAN": {"citation": "Zhao, Hu, Zhang, Fang. Super-Resolution Network with Information Distillation and "
                          "Multi-Scale Attention for Medical CT Image. Sensors 21 (2021) 6870", "doi": "10.3390/s21206870"},
    "DRIDSR": {"citation": "Chen et al. Double paths network with residual information distillation for improving "
                           "lung CT image super resolution (trained and tested on COVID-CT)", "doi": None},
    "W2AMSN": {"citation": "Wang, Hu, Zhao, Zhang. Wide Weighted Attention Multi-Scale Network for Accurate MR "
                           "Image Super-Resolution (IXI)", "doi": None},
    "SRDA": {"citation": "Wang et al. Medical Image Super-Resolution via Diagnosis-Guided Attention. ICME 2023 "
                         "(ADNI, Demented-MRI)", "doi": None},
    "MDRN": {"citation": "Deng, Chen, Yang, Huang. MDRN: Multi-distillation residual network for efficient MR "
                         "image super-resolution. AIMS 2024", "doi": None},
}

#: What every card says is out of scope.
OUT_OF_SCOPE = [
    "Diagnosis, treatment planning, measurement or any clinical decision: the output is an estimate, not an "
    "acquisition at that resolution.",
    "Replacing a thinner or higher-resolution acquisition, or quantitative work on the output (HU or signal "
    "measurements, volumes, texture/radiomics).",
]

_COMMON_LIMITATIONS = [
    "The output is not a substitute for an acquisition at that resolution: detail below the input's resolution "
    "is estimated from what the network learned on other images, not measured.",
    "Trained on CPU for a small fraction of the paper's schedule (see Training budget), not to convergence; "
    "training/RESULTS.md puts the papers' published figures beside ours.",
    "Trained and tested on 2D slices: a volume is super-resolved slice by slice, so nothing makes neighbouring "
    "slices consistent with each other.",
]
_COMMON_FAILURES = [
    "Can sharpen noise, streak or motion artefacts and add ringing at strong edges; can invent plausible texture "
    "that is not in the patient. `medsr run --check` degrades the output back and flags slices inconsistent "
    "with the input.",
    "Fine structures lost in the low-resolution input (small vessels, nodules, thin fractures) are not recovered.",
]

#: Facts per training dataset (data.dataset of a config): licence and source as stated in
#: ../shared/data/<folder>/README.md, what the images are, limitations and failure modes they imply.
DATASETS: dict[str, dict[str, Any]] = {
    "covid-ct": {
        "dataset": "COVID-CT (UCSD-AI4H)",
        "licence": "no licence; upstream terms: 'All copyrights of the data belong to the authors and publishers "
                   "of these papers' (the images are figures collected from COVID-19 papers)",
        "source": "github.com/UCSD-AI4H/COVID-CT (Zhao et al., arXiv:2003.13865); files from "
                  "Coronavirus-Visualization-Team/CVT_COVID-CT-CNN commit 1e94073 (../shared/data/covid-ct/README.md)",
        "images": "axial chest CT figures cut from COVID-19 papers (COVID and non-COVID lungs), PNG/JPEG converted "
                  "to grey, very different sizes and contrast",
        "values": "8-bit display values, already windowed by the papers' authors (no HU)",
        "split": "official COVID-CT Data-split lists (the DRIDSR paper's own 600/100/46 split is unpublished); "
                 "only the training images present in ../shared/data (229 of 425)",
        "plane": "axial",
        "spacing_note": "The figures carry no pixel spacing (unknown field of view and resampling), so the "
                        "spacing seen in training is unknown.",
        "limitations": [
            "Trained only on 8-bit display images of axial chest CT cut from published figures: it never saw HU "
            "values, other body parts (head, abdomen, pelvis, limbs), contrast phases, children, metal implants, "
            "or scanner and kernel information.",
            "At inference a HU volume is mapped through the fixed window -1024..3071 HU, a lower-contrast image "
            "than the windowed figures it was trained on; the real-HU evaluation measures the gain it keeps.",
        ],
        "failure_modes": [
            "Body parts and windows unlike chest CT figures (bone, brain, contrast-filled vessels) are outside "
            "the training data: expect smaller or no gains over bicubic there.",
        ],
    },
    "alzheimer-srda": {
        "dataset": "Demented-MRI / Alzheimer's Dataset (4 class of Images), 3 classes",
        "licence": "ODbL 1.0, as listed on the Kaggle page (quoted by several mirrors; not restated in the source "
                   "repository)",
        "source": "Kaggle 'Alzheimer's Dataset (4 class of Images)' by tourist55; files from "
                  "MiracleSkyHawk/RSM8521_FinalProject_Team6 commit cd139d7 (../shared/data/alzheimer-mri/README.md)",
        "note": "The original acquisition source of the slices is not documented by the uploader.",
        "images": "axial brain MR slices, 208 x 176 px 8-bit JPEG, classes NonDemented, VeryMildDemented, "
                  "MildDemented (890 each)",
        "values": "8-bit display values (JPEG; the uploader's intensity scaling is unknown)",
        "split": "SRDA's 3-class protocol, our seeded draw (splits/srda_3class_890_seeded.csv; the paper's draw "
                 "is unpublished)",
        "plane": "axial",
        "spacing_note": "The JPEG slices carry no pixel spacing, so the spacing seen in training is unknown.",
        "limitations": [
            "Trained only on 8-bit axial brain MR slices of one 2D dataset of unknown scanners and sequence: it "
            "never saw other body parts, other contrasts or sequences (T2, PD, FLAIR, diffusion), contrast "
            "agents, or the scanner's own intensity values.",
            "Not evaluated on real MR volumes: the numbers below are on held-out slices of the same dataset.",
        ],
        "failure_modes": [
            "Anatomy and contrasts unlike the training slices (spine, abdomen, T2/FLAIR) are outside the training "
            "data: expect smaller or no gains over bicubic there.",
        ],
    },
}
#: Facts of a folder dataset that has no entry of its own: valid, but say that nothing is known. Shipped
#: weights need a real entry (tests/test_model_cards.py refuses "not recorded" licences).
UNKNOWN_FOLDER = {
    "dataset": "a folder of 2D slices",
    "licence": "not recorded: add this folder to training.export.DATASETS (licence, source) before shipping",
    "source": "not recorded",
    "images": "2D slices from a folder (not described)",
    "values": "as stored in the files",
    "split": "train/ val/ test/ subfolders or a seeded split",
    "plane": "unrecorded",
    "spacing_note": "Not recorded.",
    "limitations": ["The training data are not described on this card."],
    "failure_modes": ["Unknown beyond the general ones below: the training data are not described."],
}
DATASETS["alzheimer"] = {
    **DATASETS["alzheimer-srda"],
    "dataset": "Alzheimer's Dataset (4 class of Images)",
    "split": "the dataset's train/ and test/ folders; validation drawn from train/ by a seeded hash",
}

#: Facts of the through-plane sources (``throughplane.sources`` of tp_*.yaml; keyed by
#: :func:`training.throughplane.source_key`): real volumes and slices with fine pixels, licences and
#: sources as stated in ../shared/data (MANIFEST.md / README.md of each folder).
DATASETS.update({
    "isotropic-mr": {
        "dataset": "isotropic-mr: real near-isotropic 1 mm MR volumes (../shared/data/isotropic-mr)",
        "licence": "MIT (neurolabusc/VolumeRenderingData: the C-STAR stroke T1/T2/FLAIR and the Seg3D head T1; "
                   "spinalcordtoolbox/sct_testing_data: the cervical-spine T1w/T2)",
        "source": "GitHub neurolabusc/VolumeRenderingData commit d15be4d and spinalcordtoolbox/sct_testing_data commit "
                  "af4c7e8, byte-for-byte (../shared/data/isotropic-mr/MANIFEST.md)",
        "note": "The stroke volumes are brain-extracted and co-registered on one oblique 1 mm grid (T1/FLAIR 8-bit), "
                "so their through-plane detail may be partly interpolated.",
        "images": "every slice of",
        "values": "scanner values (stroke T1/FLAIR stored 8-bit, T2 float32, spine int16) mapped per volume to [0, 1] "
                  "by MR percentiles (MedSRLib.intensity)",
        "split": "whole volumes: seg3d-mr/MR.nii.gz and sct-spine/t1w.nii.gz are held out from training entirely "
                 "(the ground-truth test below)",
        "plane": "all three",
        "spacing": (1.0, 1.0),
        "spacing_note": "0.9-1.0 mm near-isotropic volumes.",
        "limitations": ["Trained on near-isotropic head, brain and cervical-spine MR of a few subjects only."],
        "failure_modes": ["Anatomy and contrasts unlike the training volumes: expect smaller gains."],
    },
    "dcm-qa-decubitus": {
        "dataset": "dcm_qa_decubitus sagittal T1 FLASH 2D (../shared/data/mr-volumes)",
        "licence": "BSD-2-Clause (Chris Rorden 2022)",
        "source": "GitHub neurolabusc/dcm_qa_decubitus commit 92cd635, In/HFS/3_t1_fl2d_sag (NIfTI copy "
                  "t1_fl2d_sag_RAS.nii.gz; ../shared/data/mr-volumes/MANIFEST.md)",
        "images": "the in-plane (sagittal, 1.02 mm) slices of a real thick-slice (4.8 mm) head series:",
        "values": "scanner values mapped per volume to [0, 1] by MR percentiles (MedSRLib.intensity)",
        "split": "training only (its thick axis is never used as a target)",
        "plane": "sagittal",
        "spacing": (1.015625, 1.015625),
    },
    "sct-t2s": {
        "dataset": "SCT T2* neck, thick-slice (../shared/data/thick-slice/sct-t2s)",
        "licence": "MIT (Copyright 2014 NeuroPoly)",
        "source": "GitHub spinalcordtoolbox/sct_testing_data commit af4c7e8, t2s/t2s_uncropped.nii.gz "
                  "(../shared/data/isotropic-mr/MANIFEST.md section 4)",
        "images": "the in-plane (axial, 0.5 mm) slices of a real thick-slice (7.5 mm) T2* neck series:",
        "values": "8-bit scanner values mapped to [0, 1] by MR percentiles (MedSRLib.intensity)",
        "split": "training only (no ground truth along its 7.5 mm axis)",
        "plane": "axial",
        "spacing": (0.5, 0.5),
    },
    "vs-seg": {
        "dataset": "TCIA Vestibular-Schwannoma-SEG, VS-SEG-001 (3 axial slices)",
        "licence": "CC BY 4.0 (TCIA collection; cite Shapey et al., Sci Data 2021); copied from niivue (BSD-2-Clause)",
        "source": "GitHub niivue/niivue commit 9255c43, packages/niivue/tests/images/dicom "
                  "(../shared/data/mr-volumes/MANIFEST.md section 3)",
        "images": "the in-plane (axial, 0.41 mm) slices of a contrast T1 MPRAGE:",
        "values": "scanner values (uint16) mapped to [0, 1] by MR percentiles (MedSRLib.intensity)",
        "split": "training only",
        "plane": "axial",
        "spacing": (0.41015625, 0.41015625),
    },
    "ixi": {
        "dataset": "IXI (IXI040-Guys-0724 T2 and PD, slice 69)",
        "licence": "CC BY-SA 3.0 (acknowledge brain-development.org/ixi-dataset)",
        "source": "GitHub jmzhang79/Dual-ArbNet commit 5c0c3b6, demodata (../shared/data/mr-volumes/MANIFEST.md section 4)",
        "images": "two real axial 2D slices (0.94 mm pixels, no geometry stored):",
        "values": "MATLAB arrays mapped to [0, 1] by MR percentiles (normalise: mr)",
        "split": "training only",
        "plane": "axial",
        "spacing": None,
    },
    "totalseg-ct": {
        "dataset": "TotalSegmentator example CT DICOM series (../shared/data/totalseg-ct/example_ct_dicom)",
        "licence": "Apache-2.0 (wasserth/TotalSegmentator repository licence; where the example comes from is not "
                   "documented)",
        "source": "GitHub wasserth/TotalSegmentator commit 0e65a44, tests/reference_files/example_ct_dicom "
                  "(../shared/data/README.md)",
        "images": "the 20 axial 512 x 512 slices (0.98 mm pixels, 2 mm spacing) of one upper-abdomen series:",
        "values": "HU through the fixed CT window -1024..3071 HU -> [0, 1] (MedSRLib.intensity)",
        "split": "training; also the only fine CT available for the ground-truth test (6 mm), so that test is NOT "
                 "held out",
        "plane": "axial",
        "spacing": (0.9765625, 0.9765625),
    },
})

#: Units and intensity mapping at inference per modality (MedSRLib.intensity).
INFERENCE_INPUT = {
    "CT": ("HU (DICOM series, NIfTI, NRRD, MHA volumes)",
           "fixed window -1024..3071 HU -> [0, 1] (MedSRLib.intensity.CT_WINDOW_HU), inverted exactly on output"),
    "MR": ("scanner signal, arbitrary units (DICOM series, NIfTI, NRRD, MHA volumes)",
           "per volume [0 (or the 0.5th percentile when negative), 99.5th percentile] -> [0, 1] "
           "(MedSRLib.intensity), inverted exactly on output"),
}

#: Results file whose held-out tables go on the cards (generated by `python -m training results`).
RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"


def dataset_facts(data: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`DATASETS` entry of a config's ``data``: by ``dataset`` name, or for a ``folder`` dataset by
    the name of its folder under ../shared/data (``isotropic-mr``, ...), else :data:`UNKNOWN_FOLDER`."""
    if data["dataset"] != "folder":
        if data["dataset"] not in DATASETS:
            raise ConfigError(f"no card facts for dataset '{data['dataset']}'; add its licence, source and images "
                              "to training.export.DATASETS before exporting")
        return DATASETS[data["dataset"]]
    root = Path(str(data.get("root") or "")).resolve()
    shared = SHARED_DATA.resolve()
    if root.is_relative_to(shared) and root != shared:
        return DATASETS.get(root.relative_to(shared).parts[0], UNKNOWN_FOLDER)
    return UNKNOWN_FOLDER


def paper_schedule(cfg: Mapping[str, Any], model_name: str, network: str, scale: int, n_train_images: int,
                   iterations: int) -> dict[str, Any]:
    """The paper's schedule (its config, ``<config>`` without ``_cpu``, else ``<network>_x<scale>``) beside this run.

    ``fraction_of_paper_pixels``: HR pixels this run showed the network (iterations x batch x patch^2)
    over the paper's schedule's.
    """
    candidates = [str(cfg["name"]).removesuffix("_cpu"), f"{network.lower()}_x{scale}"]
    name = next((c for c in candidates if _config_exists(c)), None)
    if name is None:
        raise ConfigError(f"no paper config among {candidates} for {model_name} x{scale}; add training/configs/<paper>.yaml")
    paper = load_config(name)
    paper_iterations = total_iterations(paper, n_train_images)
    pt, t = paper["train"], cfg["train"]
    fraction = (iterations * t["batch"] * t["hr_patch"] ** 2) / (paper_iterations * pt["batch"] * pt["hr_patch"] ** 2)
    out = {
        "config_file": f"training/configs/{name}.yaml",
        "description": str(paper.get("description") or name),
        "iterations": int(paper_iterations),
        "batch": int(pt["batch"]),
        "hr_patch": int(pt["hr_patch"]),
        "fraction_of_paper_pixels": float(f"{fraction:.4g}"),  # 4 significant digits
    }
    if paper["data"]["dataset"] != cfg["data"]["dataset"] or paper["data"]["dataset"] == "folder":
        out["note"] = "The paper trains on other data (see its config); this run used the data above."
    return out


def _config_exists(name: str) -> bool:
    try:
        config_path(name)
    except ConfigError:
        return False
    return True


def _split_size(data: Mapping[str, Any], split: str | None) -> int | None:
    """Images in ``split`` of ``data`` (None when the split or the data is absent)."""
    if not split:
        return None
    try:
        return len(list_split(data, split).items)
    except (ConfigError, OSError):
        return None


def evaluation_entry(scores: Mapping[str, Any], *, data: str, split: str, n_images: int, scale: int, source: str,
                     command: str | None = None, note: str | None = None) -> dict[str, Any]:
    """One card ``evaluation`` item from model/bicubic scores (``convention``, ``psnr``, ``ssim``, ``bicubic_*``)."""
    entry: dict[str, Any] = {
        "data": data, "split": split, "n_images": int(n_images), "scale": int(scale),
        "convention": scores["convention"],
        "psnr": round(float(scores["psnr"]), 4), "ssim": round(float(scores["ssim"]), 4),
        "bicubic_psnr": round(float(scores["bicubic_psnr"]), 4), "bicubic_ssim": round(float(scores["bicubic_ssim"]), 4),
    }
    entry["gain_db"] = round(entry["psnr"] - entry["bicubic_psnr"], 4)
    if scores.get("ms_ssim") is not None:
        entry.update(ms_ssim=round(float(scores["ms_ssim"]), 4), bicubic_ms_ssim=round(float(scores["bicubic_ms_ssim"]), 4))
    entry["source"] = source
    if command:
        entry["command"] = command
    if note:
        entry["note"] = note
    return entry


def results_evaluations(name: str, scale: int, text: str | None = None) -> list[dict[str, Any]]:
    """The held-out test scores of ``name`` at ``scale`` in every table of training/RESULTS.md.

    A table section (``### title``) gives columns ``x<scale> PSNR``/``SSIM``/``MS-SSIM`` for the rows
    ``<name> (ours)`` and ``Bicubic (ours)``, its convention in the bullet "Metric convention `c`" and
    its image count in "x<scale>, N <dataset> test images".
    """
    text = RESULTS_FILE.read_text(encoding="utf-8") if text is None else text
    entries = []
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in section.splitlines() if ln.startswith("|")]
        conv = re.search(r"Metric convention `([^`]+)`", section)
        count = re.search(rf"^\* x{scale}, (\d+) [^\n]*? test images", section, flags=re.M)
        if len(rows) < 3 or conv is None or count is None:
            continue
        header = rows[0]
        cols = {h: i for i, h in enumerate(header)}
        byname = {r[0]: r for r in rows[2:]}
        ours, bic = byname.get(f"{name} (ours)"), byname.get("Bicubic (ours)")
        keys = {k: cols.get(f"x{scale} {k}") for k in ("PSNR", "SSIM", "MS-SSIM")}
        if ours is None or bic is None or keys["PSNR"] is None or ours[keys["PSNR"]] in ("–", "-", ""):
            continue
        scores = {"convention": conv.group(1), "psnr": float(ours[keys["PSNR"]]), "ssim": float(ours[keys["SSIM"]]),
                  "bicubic_psnr": float(bic[keys["PSNR"]]), "bicubic_ssim": float(bic[keys["SSIM"]])}
        if keys["MS-SSIM"] is not None:
            scores.update(ms_ssim=float(ours[keys["MS-SSIM"]]), bicubic_ms_ssim=float(bic[keys["MS-SSIM"]]))
        stated = re.search(rf"^\* x{scale}, .*?gain over bicubic \(PSNR\):[^\n]*?\b{re.escape(name)} ([+-][0-9.]+) dB",
                           section, flags=re.M)
        entries.append(evaluation_entry(scores, data=title, split="held-out test split", n_images=int(count.group(1)),
                                        scale=scale, source="training/RESULTS.md (python -m training results)"))
        if stated is not None:  # the gain as RESULTS.md states it (from unrounded means)
            entries[-1]["gain_db"] = float(stated.group(1))
    return entries


def card_sections(cfg: Mapping[str, Any], *, spec: Any, scale: int, n_train_images: int,
                  validation: Mapping[str, Any] | None = None, task: str = "in-plane",
                  factors: Sequence[int] | None = None) -> dict[str, Any]:
    """The card-version-2 sections of a run that :func:`MedSRLib.models.weights.save_weights` does not fill.

    Args:
        cfg: the run's config (``data``, ``train``, ``name``).
        spec: the registered model (``name``, ``network``, ``modality``, ``min_lr_size``).
        scale: the factor of the weights file.
        n_train_images: training images the run used.
        validation: the validation scores written at export (becomes the first evaluation entry).
        task: ``in-plane`` or ``through-plane``.
        factors: every factor the weights serve along their axis (default ``[scale]``).
    """
    from MedSRLib.models.cards import CARD_VERSION

    data = cfg["data"]
    facts = dataset_facts(data)
    modality = spec.modality
    units, mapping = INFERENCE_INPUT.get(modality, ("[0, 1]", "none"))
    plane = (f"in-plane: every slice along the slice axis (default the axis with the largest spacing) is "
             f"super-resolved within its plane; trained on {facts['plane']} slices") if task == "in-plane" else \
            f"through-plane: super-resolves along one axis; trained along the {facts['plane']} axis"
    evaluation = []
    if validation:
        evaluation.append(evaluation_entry(validation, data=facts["dataset"], split=f"validation split '{validation['split']}'",
                                           n_images=validation["n_images"], scale=scale,
                                           source="training/export.py at export (float16 weights)"))
    return {
        "card_version": CARD_VERSION,
        "task": task,
        "factors": [int(f) for f in (factors or [scale])],
        "reference": dict(REFERENCES.get(spec.network, {"citation": spec.paper, "doi": None})),
        "licence": {
            "weights": dict(WEIGHTS_LICENCE),
            "training_data": [{k: facts[k] for k in ("dataset", "licence", "source", "note") if k in facts}],
        },
        "out_of_scope_use": list(OUT_OF_SCOPE),
        "input": {
            "modality": modality,
            "units": units,
            "intensity_mapping": {"inference": mapping,
                                  "training": f"{NORMALISATIONS[data['normalise']]}; {facts['values']}"},
            "spacing_mm": {"in_plane": None, "through_plane": None, "note": facts["spacing_note"]},
            "plane": plane,
            "min_lr_side_px": int(max(1, spec.min_lr_size)),
        },
        "training_data": [{
            "dataset": facts["dataset"],
            "images": facts["images"],
            "values": facts["values"],
            "split": facts["split"],
            "n_train": int(n_train_images),
            "n_val": _split_size(data, data.get("val")),
            "n_test": _split_size(data, data.get("test")),
        }],
        "evaluation": evaluation,
        "limitations": facts["limitations"] + list(_COMMON_LIMITATIONS) + (
            [] if spec.config.startswith("paper") else
            [f"Not the paper's network size: configuration '{spec.config}' ({spec.description}), made to train on "
             "a CPU; the paper's configuration is larger."]),
        "failure_modes": facts["failure_modes"] + list(_COMMON_FAILURES),
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
    if cfg.get("mode", "inplane") != "inplane":
        raise ConfigError(f"a {cfg.get('mode')} checkpoint is exported by training.modes.export")
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
    outputs = super_resolve_images(predictor_for_module(module, spec, scale), images)  # a copy is prepared
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
    n_train = int(ckpt.get("n_train_images") or len(list_split(data, data["train"]).items))
    card["training"]["paper_schedule"] = paper_schedule(cfg, spec.name, spec.network, scale, n_train, int(ckpt["iteration"]))
    card.update(card_sections(cfg, spec=spec, scale=scale, n_train_images=n_train, validation=metrics))
    weights_path, card_path = save_weights(module, target, card=card)
    reloaded = spec.load(scale, weights=weights_path)  # sha256 + shape checks
    probe = torch.from_numpy(images[0].lr[None, None].copy())
    with torch.no_grad():
        if not torch.allclose(reloaded(probe), module(probe), atol=1e-5):
            raise ConfigError(f"{weights_path} does not reproduce the exported network; not shipped")
    return weights_path, card_path, read_card(weights_path)


#: The real HU volume every CT card is measured on (held out: never used in training).
REAL_CT = "../shared/data/totalseg-ct/example_ct_dicom"
REAL_CT_DATA = ("TotalSegmentator example CT (Apache-2.0): Siemens Biograph40 mCT 'CT Body' series, upper abdomen at "
                "the lung bases (liver, stomach, spine), kernel Br38f, 20 axial 512 x 512 slices, 0.98 mm pixels, "
                "HU -1024..1839")
REAL_CT_CONVENTION = "dridsr-y"
#: Display windows (level, width in HU) for the 8-bit comparison: the same slices made to look like COVID-CT's
#: training figures (windowed, 8-bit). ``lung`` is the figures' usual window; ``soft`` suits these abdominal slices.
WINDOWS: dict[str, tuple[float, float]] = {"lung": (-600.0, 1500.0), "soft": (40.0, 400.0)}


def window_dir(window: str) -> str:
    """Where ``window-pngs --window W`` writes the real CT's slices for the 8-bit comparison."""
    return f"/tmp/medsr_real_ct_{window}8bit"


def window_pngs(volume: str | Path, out: str | Path, *, window: str = "lung") -> list[Path]:
    """Write every slice (along the default slice axis) of a HU volume as an 8-bit PNG in a display window.

    The images then look like COVID-CT's training figures (windowed, 8-bit), so ``medsr evaluate OUT``
    on them against ``medsr evaluate VOLUME`` (fixed -1024..3071 HU window) shows what the mapping
    applied to HU data costs the networks on the same slices.
    """
    import numpy as np
    from PIL import Image

    from MedSRLib.geometry import resolve_slice_axis
    from MedSRLib.io import read_volume

    level, width = WINDOWS[window]
    vol = read_volume(volume)
    stack = np.moveaxis(vol.array, resolve_slice_axis(vol, None), 0)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    low = level - width / 2.0
    written = []
    for k, hu in enumerate(stack):
        unit = np.clip((hu.astype(np.float64) - low) / width, 0.0, 1.0)
        written.append(out / f"slice_{k:03d}.png")
        Image.fromarray(np.round(unit * 255.0).astype(np.uint8)).save(written[-1])
    return written


def real_ct_command(name: str, scale: int) -> str:
    """The command whose ``--json`` output is a card's real-HU evaluation."""
    return f"medsr evaluate {REAL_CT} --model {name} --scale {scale} --convention {REAL_CT_CONVENTION} --json"


def window_command(window: str, name: str, scale: int) -> str:
    """The commands whose ``--json`` output is a card's 8-bit ``window`` evaluation of the real CT."""
    return (f"python -m training.export window-pngs {REAL_CT} {window_dir(window)} --window {window} && "
            f"medsr evaluate {window_dir(window)} --model {name} --scale {scale} --convention {REAL_CT_CONVENTION} --json")


def real_ct_evaluation(result: Mapping[str, Any], covid_gain_db: float | None,
                       windowed: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[list[dict[str, Any]], str]:
    """A CT card's real-CT evaluation entries and their statement, from ``medsr evaluate --json`` results.

    Args:
        result: :func:`real_ct_command` output (HU through the fixed window, as ``medsr run`` does).
        covid_gain_db: the model's gain over bicubic on COVID-CT's test split (same convention).
        windowed: ``{window: window_command(window, ...) output}`` for windows of :data:`WINDOWS` (optional).
    """
    name, scale = result["model"], int(result["scale"])
    gain = result["psnr"] - result["bicubic_psnr"]
    source = "measured for issue 18 (2026-12-07, x86_64 CPU, torch 2.13.0)"
    split = "all 20 axial slices (in-plane)"
    note = ("HR = each axial slice through the CT window -1024..3071 HU that medsr run applies, LR = its MATLAB-bicubic "
            "degradation, whole slices. Absolute PSNR is not comparable with COVID-CT's (the window leaves most of "
            "[0, 1] empty); the gain over bicubic is.")
    entries = [evaluation_entry(result, data=REAL_CT_DATA, split=split, n_images=result["n_images"], scale=scale,
                                source=source, command=real_ct_command(name, scale), note=note)]
    statement = (f"On real HU slices (one CT series, upper abdomen at the lung bases, 20 slices, fixed window "
                 f"-1024..3071 HU) x{scale} gains {gain:+.2f} dB PSNR over bicubic (SSIM {result['ssim']:.4f} vs "
                 f"{result['bicubic_ssim']:.4f})")
    if covid_gain_db is not None:
        diff = gain - covid_gain_db
        statement += (f", against {covid_gain_db:+.2f} dB on COVID-CT's test split in the same convention "
                      f"({abs(diff):.2f} dB {'less' if diff < 0 else 'more'})")
    statement += f". Measured with `{real_ct_command(name, scale)}`."
    shown = []
    for window, res in (windowed or {}).items():
        level, width = WINDOWS[window]
        w_gain = res["psnr"] - res["bicubic_psnr"]
        entries.append(evaluation_entry(
            res, data=f"{REAL_CT_DATA.split(':')[0]}, the same slices as 8-bit {window}-window PNGs (level {level:g}, "
                      f"width {width:g} HU)",
            split=split, n_images=res["n_images"], scale=scale, source=source, command=window_command(window, name, scale),
            note="Images like the network's training figures (windowed, 8-bit). The window clips what lies outside "
                 "it, so this scores other image content than the HU entry; compare gains, not PSNRs."))
        shown.append(f"{w_gain:+.2f} dB in a {window} window (level {level:g}, width {width:g}; "
                     f"{w_gain - gain:+.2f} dB against the fixed HU window)")
    if shown:
        statement += (f" The same slices shown as 8-bit windowed images, like its training figures, give "
                      f"{' and '.join(shown)}. A window clips what lies outside it and changes the contrast, so these "
                      f"differences show how much the gain depends on the contrast the network is shown, not the cost "
                      f"of the 8-bit training alone (commands in the evaluation entries).")
    return entries, statement


def upgrade_card(card: Mapping[str, Any], *, results_text: str | None = None,
                 real_ct: Mapping[str, Any] | None = None,
                 windowed: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """A version-1 card (or an older version-2 card) rewritten as version 2; sha256 and measurements kept.

    The new sections come from :func:`card_sections` (as at export); the held-out numbers are copied
    from training/RESULTS.md; ``real_ct`` (a ``medsr evaluate --json`` result of :func:`real_ct_command`)
    adds the real-HU evaluation and its statement to a CT card; ``windowed`` (:func:`window_command`
    results by window) the same slices as 8-bit windowed images.
    """
    from MedSRLib.models import get_model
    from MedSRLib.models.cards import CARD_VERSION

    spec = get_model(card["name"])
    scale = int(card["scale"])
    training = {k: v for k, v in card["training"].items() if k != "paper_schedule"}
    cfg = validate(load_config(training["config"]))
    found = re.search(r"\((\d+) images", str(training["data"]))
    if found is None:
        raise ConfigError(f"card {card['name']} x{scale}: training.data does not say how many images were used")
    n_train = int(found.group(1))
    sections = card_sections(cfg, spec=spec, scale=scale, n_train_images=n_train, validation=card["metrics"])
    training["paper_schedule"] = paper_schedule(cfg, spec.name, spec.network, scale, n_train, int(training["iterations"]))
    held_out = results_evaluations(spec.name, scale, results_text)
    limitations = list(sections["limitations"])
    extra = []
    if real_ct is not None:
        covid = next((e["gain_db"] for e in held_out if e["data"].startswith("COVID-CT")), None)
        entries, statement = real_ct_evaluation(real_ct, covid, windowed)
        extra += entries
        limitations.insert(2, statement)
    keep = ("format_version", "name", "scale")
    new: dict[str, Any] = {"card_version": CARD_VERSION, **{k: card[k] for k in keep}}
    new.update(task=sections["task"], factors=sections["factors"])
    new.update({k: card[k] for k in ("network", "config", "paper")})
    new["reference"] = sections["reference"]
    new.update({k: card[k] for k in ("modality", "options", "n_parameters", "dtype", "weights_file", "sha256", "created")})
    new["licence"] = sections["licence"]
    new["intended_use"] = card["intended_use"]
    new.update({k: sections[k] for k in ("out_of_scope_use", "input", "training_data")})
    new["training"] = training
    new["metrics"] = card["metrics"]
    new["evaluation"] = held_out + extra + sections["evaluation"]
    new["limitations"] = limitations
    new["failure_modes"] = sections["failure_modes"]
    return new


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.export upgrade-cards [--real-ct-json DIR]``: rewrite every shipped card as version 2;
    ``python -m training.export window-pngs VOLUME OUT``: :func:`window_pngs`.

    ``DIR`` holds ``<name>_x<scale>.json`` outputs of :func:`real_ct_command` for the CT models.
    Only the JSON cards are written; the weights files (and their sha256) are untouched.
    """
    import argparse
    import json

    from MedSRLib.models.cards import shipped_cards, write_card

    parser = argparse.ArgumentParser(prog="python -m training.export")
    parser.add_argument("command", choices=["upgrade-cards", "window-pngs"])
    parser.add_argument("paths", nargs="*", help="window-pngs: VOLUME OUT_FOLDER")
    parser.add_argument("--window", choices=sorted(WINDOWS), default="lung", help="window-pngs: the display window")
    parser.add_argument("--real-ct-json", type=Path, default=None,
                        help="folder of `medsr evaluate --json` outputs: <name>_x<scale>.json (real HU) and "
                             "<window>_<name>_x<scale>.json (8-bit windowed PNGs, window-pngs --window <window>)")
    args = parser.parse_args(argv)
    if args.command == "window-pngs":
        if len(args.paths) != 2:
            parser.error("window-pngs needs VOLUME OUT_FOLDER")
        print(f"wrote {len(window_pngs(*args.paths, window=args.window))} PNGs to {args.paths[1]}")
        return 0
    for path in shipped_cards():
        card = json.loads(path.read_text(encoding="utf-8"))
        real, windowed = None, {}
        if args.real_ct_json is not None and card["modality"] == "CT":
            source = args.real_ct_json / path.name
            real = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else None
            for window in WINDOWS:
                w_source = args.real_ct_json / f"{window}_{path.name}"
                if w_source.is_file():
                    windowed[window] = json.loads(w_source.read_text(encoding="utf-8"))
            if real is None:
                print(f"{path.name}: no real-CT result at {source}; card written without it")
        write_card(path, upgrade_card(card, real_ct=real, windowed=windowed))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
