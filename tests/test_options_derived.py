"""One options type: EngineOptions validates by name, is keyword-only, and the CLI flags and pipeline
keywords are derived from its fields, so a flag is honoured everywhere it is offered."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from MedSRLib.cli import build_parser
from MedSRLib.engine import EngineOptions, engine_options, option_fields
from MedSRLib.errors import OptionError
from MedSRLib.volume import Volume


def _subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("command", ["run", "evaluate"])
def test_every_offered_engine_option_is_a_flag_of_run_and_evaluate(command):
    dests = {a.dest for a in _subparser(command)._actions}
    offered = option_fields(offered_only=True)
    assert set(offered) <= dests
    assert {"threads", "compile", "precision", "tile", "batch_size", "memory_budget_mb", "device"} <= set(offered)
    # the only field without a flag is documented as a speed detail
    assert set(option_fields()) - set(offered) == {"channels_last"}


def test_flags_become_the_same_options_in_every_command(tmp_path):
    from MedSRLib.cli import _engine_options

    flags = ["--device", "cpu", "--batch-size", "3", "--memory-budget", "64", "--tile", "48", "--tile-overlap", "8",
             "--ensemble", "--precision", "bf16", "--threads", "auto", "--compile"]
    run = build_parser().parse_args(["run", "in.nii", "out.nii", "--scale", "2", *flags])
    ev = build_parser().parse_args(["evaluate", "hr", "--scale", "2", *flags])
    expected = EngineOptions(device="cpu", batch_size=3, memory_budget_mb=64.0, tile=48, tile_overlap=8, ensemble=True,
                             precision="bf16", threads="auto", compile=True)
    assert _engine_options(run) == expected == _engine_options(ev)


def test_options_are_keyword_only_and_rejected_by_name():
    with pytest.raises(TypeError):
        EngineOptions("cpu")  # type: ignore[misc]
    with pytest.raises(OptionError, match="threads"):
        EngineOptions(threads=0)
    with pytest.raises(OptionError, match="unknown engine option.*tiles"):
        engine_options(tiles=3)
    assert engine_options(EngineOptions(tile=64), precision="fp32") == EngineOptions(tile=64, precision="fp32")


def test_pipeline_takes_every_field_as_a_keyword_and_refuses_unknown_ones():
    from MedSRLib.pipeline import super_resolve

    volume = Volume(np.random.default_rng(1).random((2, 12, 10)).astype(np.float32), spacing=(1.0, 1.0, 3.0),
                    origin=(0.0, 0.0, 0.0), direction=np.eye(3), modality="MR")
    keywords = {f.name: getattr(EngineOptions(device="cpu", threads=1, precision="fp32"), f.name)
                for f in dataclasses.fields(EngineOptions)}
    result = super_resolve(volume, model="bicubic", scale=2, **keywords)
    assert result.metadata["medsr"]["precision"] == "fp32"
    with pytest.raises(OptionError, match="thread"):
        super_resolve(volume, model="bicubic", scale=2, thread=1)
