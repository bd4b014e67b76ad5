"""``PyTorchUtils`` double (the PyTorch extension's module, fepegar/SlicerPyTorch).

``PyTorchUtilsLogic.torchInstalled()`` reports the real torch of this environment (tests patch it to
simulate a Slicer without torch); ``installTorch`` records its arguments in :data:`installTorchCalls`,
installs nothing, and returns :data:`installResult` (None = "not installed", as when declined).
"""

from __future__ import annotations

import importlib.metadata

installTorchCalls: list[dict] = []
installResult = None


class PyTorchUtilsLogic:
    def __init__(self) -> None:
        self._torch = None

    @staticmethod
    def torchInstalled() -> bool:
        try:
            importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return False
        import torch  # noqa: F401  (the real method imports it too)

        return True

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None,
                     torchvisionVersionRequirement=None):
        installTorchCalls.append({"askConfirmation": askConfirmation, "torchVersionRequirement": torchVersionRequirement,
                                  "forceComputationBackend": forceComputationBackend})
        return installResult
