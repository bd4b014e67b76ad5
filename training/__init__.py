"""MedSR training: the five papers' recipes as YAML configs, a torchrun/DDP training loop, evaluation
against the published tables, and export to ``MedSRLib/weights`` (``python -m training --help``)."""

from .config import ConfigError, available_configs, load_config, validate

__all__ = ["ConfigError", "available_configs", "load_config", "validate"]
