"""``slicer.parameterNodeWrapper`` double: typed fields serialised into a vtkMRMLScriptedModuleNode.

Follows slicer-conventions.md 2.2 (Slicer/Slicer ``Base/Python/slicer/parameterNodeWrapper``):
fields come from the class's type hints (``Annotated[T, validators...]`` allowed); defaults are the
class attribute, a ``Default(...)`` annotation, or the implicit ``0, 0.0, "", False, None``; defaults
are written only for parameters the node does not hold yet; validators run on every assignment
(``Choice``/``WithinRange``/``Minimum``/``Maximum`` raise ``ValueError``); MRML node fields are node
references; bools are stored as "True"/"False", numbers and strings with ``str``.
GUI connection needs Qt and raises here.
"""

from __future__ import annotations

import typing
from types import SimpleNamespace

from slicer import vtkMRMLNode

__all__ = ["parameterNodeWrapper", "Choice", "WithinRange", "Minimum", "Maximum", "Default", "Decimals",
           "SingleStep", "NotNone"]


class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value '{value}' is not in the allowed choices {self.choices}")


class WithinRange:
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value {value} is not within [{self.minimum}, {self.maximum}]")


class Minimum:
    def __init__(self, minimum) -> None:
        self.minimum = minimum

    def validate(self, value) -> None:
        if value < self.minimum:
            raise ValueError(f"Value {value} is below the minimum {self.minimum}")


class Maximum:
    def __init__(self, maximum) -> None:
        self.maximum = maximum

    def validate(self, value) -> None:
        if value > self.maximum:
            raise ValueError(f"Value {value} is above the maximum {self.maximum}")


class NotNone:
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class Default:
    def __init__(self, value=None, generator=None) -> None:
        self.value, self.generator = value, generator

    def make(self):
        return self.generator() if self.generator is not None else self.value


class Decimals:
    """GUI hint only."""

    def __init__(self, decimals: int) -> None:
        self.decimals = decimals


class SingleStep:
    """GUI hint only."""

    def __init__(self, step) -> None:
        self.step = step


_IMPLICIT_DEFAULTS = {int: 0, float: 0.0, str: "", bool: False}


class _Field:
    def __init__(self, name: str, hint, classDefault) -> None:
        self.name = name
        self.annotations: tuple = ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            self.annotations = tuple(rest)
        self.type = hint
        self.isNode = isinstance(hint, type) and issubclass(hint, vtkMRMLNode)
        self.validators = [a for a in self.annotations if hasattr(a, "validate")]
        explicit = [a for a in self.annotations if isinstance(a, Default)]
        if explicit:
            self.makeDefault = explicit[0].make
        elif classDefault is not _MISSING:
            self.makeDefault = lambda: classDefault
        else:
            self.makeDefault = lambda: None if self.isNode else _IMPLICIT_DEFAULTS.get(self.type)

    def validate(self, value) -> None:
        if self.isNode:
            if value is not None and not isinstance(value, self.type):
                raise ValueError(f"{self.name}: expected {self.type.__name__} or None; got {type(value).__name__}")
        elif not isinstance(value, self.type) or (self.type is int and isinstance(value, bool)):
            raise ValueError(f"{self.name}: expected {self.type.__name__}; got {value!r}")
        for validator in self.validators:
            validator.validate(value)

    def write(self, node, value) -> None:
        self.validate(value)
        if self.isNode:
            node.SetParameter(self.name, "")
            node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(self.name, str(value))

    def read(self, node):
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        if self.type is bool:
            return text == "True"
        return self.type(text)


_MISSING = object()


def parameterNodeWrapper(cls):
    """Turn a class of annotated fields into a wrapper around a vtkMRMLScriptedModuleNode."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _Field(name, hint, cls.__dict__.get(name, _MISSING)) for name, hint in hints.items()}

    def __init__(self, parameterNode) -> None:
        object.__setattr__(self, "parameterNode", parameterNode)
        for field in fields.values():
            if field.name not in parameterNode.GetParameterNames():
                field.write(parameterNode, field.makeDefault())

    def makeProperty(field: _Field) -> property:
        return property(lambda self: field.read(self.parameterNode),
                        lambda self, value: field.write(self.parameterNode, value))

    for field in fields.values():
        setattr(cls, field.name, makeProperty(field))
    cls.__init__ = __init__
    cls.allParameters = fields
    cls.default = classmethod(lambda c, name: SimpleNamespace(value=fields[name].makeDefault()))
    cls.getValue = lambda self, name: getattr(self, name)
    cls.setValue = lambda self, name, value: setattr(self, name, value)
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, previous: self.parameterNode.EndModify(previous)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)

    def connectGui(self, gui):
        raise RuntimeError("the slicer test double has no Qt: connectGui runs only in real Slicer")

    cls.connectGui = connectGui
    return cls
