"""``slicer.ScriptedLoadableModule`` double: the four base classes, without Qt.

Mirrors Slicer/Slicer ``Base/Python/slicer/ScriptedLoadableModule.py`` (slicer-conventions.md 2.1,
6.1): the module constructor fills metadata defaults and registers ``slicer.selfTests[name]``;
``resourcePath`` is ``<folder of the module file>/Resources/<name>``; the logic's
``getParameterNode`` returns the scene's singleton ``vtkMRMLScriptedModuleNode`` tagged with the
module name; the test class is a ``unittest.TestCase`` whose ``delayDisplay`` only logs.
"""

from __future__ import annotations

import logging
import os
import sys
import unittest

import slicer

__all__ = ["ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic",
           "ScriptedLoadableModuleTest"]


def _moduleFolder(obj) -> str:
    return os.path.dirname(os.path.abspath(sys.modules[type(obj).__module__].__file__))


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = self.moduleName
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename: str) -> str:
        return os.path.join(_moduleFolder(self), "Resources", filename)

    def runTest(self, msec: int = 100, **kwargs) -> None:
        testCase = sys.modules[type(self).__module__].__dict__[self.moduleName + "Test"]()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__[: -len("Widget")]

    def resourcePath(self, filename: str) -> str:
        return os.path.join(_moduleFolder(self), "Resources", filename)

    def setup(self) -> None:
        raise RuntimeError("the slicer test double has no Qt: module widgets run only in real Slicer")


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__[: -len("Logic")] if self.__class__.__name__.endswith("Logic") else ""

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    messageDelay = 100

    def delayDisplay(self, message, requestedDelay=None, msec=None) -> None:
        logging.info(message)
