"""Checks over every registered network (the five papers'; W2AMSN/SRDA join automatically via
``list_models()``): registry entries, output shapes at every scale, seeded determinism, input
validation, and that each network (its small configuration) can overfit one real image patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from MedSRLib.errors import InputSizeError, ModelInputError, ModelNotFoundError, ScaleError
from MedSRLib.models import get_model, list_models

#: networks.md Section 2: registry name -> (network, config, scales, modality).
EXPECTED = {
    "idman": ("IDMAN", "paper", (2, 3, 4), "CT"),
    "idman-small": ("IDMAN", "small", (2, 3, 4), "CT"),
    "dridsr": ("DRIDSR", "paper", (2, 3, 4), "CT"),
    "w2amsn": ("W2AMSN", "paper", (2, 3, 4), "MR"),
    "w2amsn-s": ("W2AMSN", "paper_s", (2, 3, 4), "MR"),
    "w2amsn-small": ("W2AMSN", "small", (2, 3, 4), "MR"),
    "srda": ("SRDA", "paper", (4,), "MR"),
    "srda-small": ("SRDA", "small", (4,), "MR"),
    "mdrn": ("MDRN", "paper", (2, 4, 8), "MR"),
}
#: Networks whose file is written in this task (always registered).
OWN = ("idman", "idman-small", "dridsr", "mdrn")


NETWORKS = [s for s in list_models() if s.learned]
#: Odd and even LR sizes (h, w).
SIZES = ((23, 17), (16, 16))


def _small_per_network() -> list[str]:
    """One configuration per network: its ``small`` config, else its smallest."""
    by_network: dict[str, list] = {}
    for spec in NETWORKS:
        by_network.setdefault(spec.network, []).append(spec)
    chosen = []
    for specs in by_network.values():
        small = [s for s in specs if s.config == "small"]
        chosen.append((small or sorted(specs, key=lambda s: s.num_parameters(min(s.scales))))[0].name)
    return sorted(chosen)


#: One configuration per network: its ``small`` config, else its only/smallest one.
SMALL = _small_per_network()


def _seeded(name: str, scale: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return get_model(name).build(scale).eval()


# --------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registered_configs_match_design_table(name: str) -> None:
    if name not in {s.name for s in NETWORKS}:
        assert name not in OWN, f"{name} must be registered by this package"
        pytest.skip(f"{name} is not registered yet (another worker's file)")
    network, config, scales, modality = EXPECTED[name]
    spec = get_model(name)
    assert (spec.network, spec.config, tuple(spec.scales), spec.modality) == (network, config, scales, modality)
    assert spec.learned and spec.paper and spec.description
    assert spec.min_lr_size >= 1


def test_registry_lookup_is_case_insensitive_and_rejects_unknown_names() -> None:
    assert get_model("IDMAN-Small") is get_model("idman-small")
    with pytest.raises(ModelNotFoundError, match="idman"):
        get_model("idman-huge")


@pytest.mark.parametrize("name", [s.name for s in NETWORKS])
def test_unsupported_scale_raises_scale_error(name: str) -> None:
    spec = get_model(name)
    bad = next(s for s in (5, 3, 6, 7) if s not in spec.scales)
    for scale in (bad, 2.5, True):
        with pytest.raises(ScaleError, match=name):
            spec.build(scale)


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("name,scale", [(n, s) for n in SMALL for s in get_model(n).scales])
def test_output_is_input_times_scale_for_odd_and_even_sizes(name: str, scale: int) -> None:
    net = _seeded(name, scale)
    with torch.inference_mode():
        for h, w in SIZES:
            y = net(torch.rand(2, 1, h, w))
            assert y.shape == (2, 1, scale * h, scale * w)
            assert y.dtype == torch.float32 and torch.isfinite(y).all()


@pytest.mark.parametrize("name", [s.name for s in NETWORKS if s.name not in SMALL])
def test_larger_configs_have_the_right_shapes_on_the_meta_device(name: str) -> None:
    """Paper-size configs (up to 85M parameters): one build on the meta device (no memory, no compute)
    at the largest scale; their small sibling above covers every scale with real numbers."""
    scale = max(get_model(name).scales)
    with torch.device("meta"):
        net = get_model(name).build(scale).eval()
        for h, w in SIZES:
            assert net(torch.zeros(2, 1, h, w)).shape == (2, 1, scale * h, scale * w)


@pytest.mark.parametrize("name", SMALL)
def test_network_runs_at_its_min_lr_size_and_rejects_smaller(name: str) -> None:
    spec = get_model(name)
    scale = min(spec.scales)
    net = _seeded(name, scale)
    m = spec.min_lr_size
    with torch.inference_mode():
        assert net(torch.rand(1, 1, m, m + 1)).shape == (1, 1, scale * m, scale * (m + 1))
        with pytest.raises(InputSizeError, match=f"{m} x {m}"):
            net(torch.rand(1, 1, m - 1, m + 4))


@pytest.mark.parametrize("name", SMALL)
def test_bad_tensors_raise_model_input_error(name: str) -> None:
    spec = get_model(name)
    net = _seeded(name, min(spec.scales))
    side = max(8, spec.min_lr_size)
    with torch.inference_mode():
        for bad, what in (
            (torch.rand(1, side, side), "N x 1 x H x W"),
            (torch.rand(side, side), "N x 1 x H x W"),
            (torch.rand(1, 3, side, side), "3"),
            (torch.randint(0, 255, (1, 1, side, side)), "float"),
        ):
            with pytest.raises(ModelInputError, match=what):
                net(bad)


# ------------------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", SMALL)
def test_same_seed_gives_identical_weights_and_outputs(name: str) -> None:
    spec = get_model(name)
    scale = min(spec.scales)
    a, b, c = _seeded(name, scale, 0), _seeded(name, scale, 0), _seeded(name, scale, 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    x = torch.rand(2, 1, 12, 11, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert not torch.equal(ya, yc)


# ------------------------------------------------------------------------------ overfit real patch

#: One real image per modality (networks are trained on CT or MR slices).
REAL_IMAGES = {
    "CT": ("covid-ct", "Images-processed", "CT_COVID", "2020.01.24.919183-p27-134.png"),
    "MR": ("alzheimer-mri", "test", "MildDemented", "26 (19).jpg"),
}


def _real_patch(modality: str, size: int = 32) -> np.ndarray:
    """The ``size x size`` crop (stride 8) with the largest standard deviation, grey in [0, 1]."""
    from PIL import Image

    path = shared_path(*REAL_IMAGES["CT" if modality == "CT" else "MR"])
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
    best = max(
        (img[y:y + size, x:x + size].std(), y, x)
        for y in range(0, img.shape[0] - size + 1, 8)
        for x in range(0, img.shape[1] - size + 1, 8)
    )
    return np.ascontiguousarray(img[best[1]:best[1] + size, best[2]:best[2] + size])


@pytest.mark.parametrize("name", SMALL)
def test_network_overfits_one_real_patch(name: str) -> None:
    """L1 on one real 32 x 32 HR patch (LR by the project's MATLAB-bicubic degradation) falls >= 10x."""
    from MedSRLib.resize import degrade

    spec = get_model(name)
    scale = min(spec.scales)
    hr = _real_patch(spec.modality)
    assert hr.std() > 0.1  # a patch with structure, not flat background
    lr = np.ascontiguousarray(degrade(hr, scale=scale), dtype=np.float32)
    hr_t, lr_t = torch.from_numpy(hr)[None, None], torch.from_numpy(lr)[None, None]

    net = _seeded(name, scale).train()
    steps = 150
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    with torch.no_grad():
        first = (net(lr_t) - hr_t).abs().mean().item()
    for _ in range(steps):
        loss = (net(lr_t) - hr_t).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        last = (net(lr_t) - hr_t).abs().mean().item()
    assert last <= first / 10, f"{name}: L1 {first:.4f} -> {last:.4f} after {steps} Adam steps"
