"""Training options for the CPU weight-making runs: an EDSR-style warm start copies exactly the tensors
whose names and shapes match (the tail stays fresh), bad values are rejected by name before any work,
and bf16 autocast on CPU trains fp32 master weights whose loss drops."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conftest import shared_path
from MedSRLib.models import get_model
from training.config import ConfigError, load_config, validate
from training.loop import train, warm_start

WEIGHTS = Path(__file__).resolve().parent.parent / "MedSRLib" / "weights"


def test_warm_start_copies_matching_tensors_and_leaves_the_tail_fresh():
    from safetensors.torch import load_file

    source = load_file(str(WEIGHTS / "dridsr_x4.safetensors"))
    torch.manual_seed(0)
    model = get_model("dridsr").build(3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    copied = warm_start(model, WEIGHTS / "dridsr_x4.safetensors")
    after = model.state_dict()
    same_shape = [k for k in after if k in source and source[k].shape == after[k].shape]
    assert copied == len(same_shape) > 0.8 * len(after)
    for k in same_shape:
        assert torch.equal(after[k], source[k].float()), k
    different = [k for k in after if k not in same_shape]
    assert different, "x3 and x4 tails must differ in shape"
    for k in different:
        assert torch.equal(after[k], fresh[k]), k


def test_warm_start_from_another_network_is_rejected():
    model = get_model("mdrn").build(2)
    with pytest.raises(ConfigError, match="no tensor"):
        warm_start(model, WEIGHTS / "dridsr_x2.safetensors")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.init_from": "MedSRLib/weights/missing_x3.safetensors"}, "does not exist"),
        ({"train.init_from": "README.md"}, "must be a .safetensors"),
        ({"train.cpu_bf16": "yes"}, "train.cpu_bf16"),
    ],
)
def test_bad_warm_start_and_bf16_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(load_config("dridsr_x3_cpu", overrides=overrides), need_data=False)


@pytest.fixture(scope="module")
def covid_folder(tmp_path_factory):
    root = shared_path("covid-ct")
    out = tmp_path_factory.mktemp("covid_bf16")
    for split, lst, n in (("train", "trainCT_NonCOVID.txt", 8), ("val", "valCT_NonCOVID.txt", 2)):
        (out / split).mkdir()
        names = [m for m in (root / "Data-split/NonCOVID" / lst).read_text().split()
                 if (root / "Images-processed/CT_NonCOVID" / m).is_file()]
        for name in names[:n]:
            shutil.copy(root / "Images-processed/CT_NonCOVID" / name, out / split / name)
    return out


def test_bf16_autocast_run_with_warm_start_trains_fp32_weights(covid_folder, tmp_path):
    cfg = load_config("dridsr_x3_cpu", overrides={
        "data.dataset": "folder", "data.root": str(covid_folder), "log.root": str(tmp_path),
        "train.hr_patch": 48, "train.batch": 4, "train.iterations": 12, "train.time_budget": None,
        "train.patches_per_image": 1, "train.threads": 1, "val.every": 12, "val.max_side": 96,
        "log.every": 1, "log.checkpoint_every": 12, "log.tensorboard": False,
    })
    assert cfg["train"]["cpu_bf16"] is True and cfg["train"]["init_from"].endswith("dridsr_x4.safetensors")
    result = train(cfg, resume=False, progress=False)
    losses = [loss for _, loss in result.losses]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    # the x3 tail starts fresh (its shapes differ from x4's), so the first losses are a fresh output's
    # (~0.35); on the warm-started body they more than halve within 12 bf16 iterations
    assert sum(losses[-4:]) / 4 < 0.5 * sum(losses[:2]) / 2, losses
    ckpt = torch.load(result.run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


def test_l2_loss_is_the_mean_squared_error_of_the_network_output():
    """``train.loss: l2`` (fine-tuning for PSNR) is MSE of the same output L1 is taken of; through-plane
    networks get the batch's row factor."""
    from training.loop import TrainStep

    torch.manual_seed(0)
    net = get_model("tp-dridsr").build(8).eval()
    for p in net.tails.parameters():
        torch.nn.init.normal_(p, std=0.05)
    lr, hr = torch.rand(2, 1, 6, 10), torch.rand(2, 1, 18, 10)
    label = torch.zeros(2, dtype=torch.long)
    with torch.no_grad():
        sr = net(lr, 3)
        l2 = TrainStep(net, None, loss="l2", weights={})(lr, hr, label)[0]
        l1 = TrainStep(net, None, loss="l1", weights={})(lr, hr, label)[0]
    assert torch.allclose(l2, ((sr - hr) ** 2).mean()) and torch.allclose(l1, (sr - hr).abs().mean())
    assert not torch.allclose(l1, l2)
