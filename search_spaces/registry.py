"""One way to name the pluggable classes: search spaces, controllers and latency sources.

Each kind has one :class:`Registry`. A class registers under its ``name`` with the registry's
decorator (``search_spaces.register``, ``nas.register_controller``, ``nas.register_source``);
the toolkit's own classes are registered by their import path and imported on first use, so a
search loads only what it runs. A name that is not registered may be an import path,
``module:Class``, which is imported and checked. Every error is one line naming the kind, what
was given and what is allowed.

>>> class Shape:
...     name = ""
>>> SHAPES = Registry("shape", Shape, builtin={"dict": "builtins:dict"})
>>> @SHAPES.register
... class Square(Shape):
...     name = "square"
>>> SHAPES.names()
['dict', 'square']
>>> SHAPES.create("square").name
'square'
>>> SHAPES.resolve("sqare")
Traceback (most recent call last):
ValueError: shape: unknown name 'sqare'; allowed: dict, square, or module:Class (did you mean 'square'?)
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named subclasses of ``base``: ``kind`` names them in errors (``"space"``), ``arguments``
    is what their constructor takes (``"parameters"``), ``builtin`` maps names to classes or to
    ``module:Class`` paths imported on first use."""

    def __init__(self, kind: str, base: type, *, builtin: dict[str, Any] | None = None,
                 arguments: str = "arguments"):
        self.kind, self.base, self.arguments = kind, base, arguments
        self._entries: dict[str, Any] = dict(builtin or {})

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: register ``cls`` under ``cls.name``; another class under a taken name raises."""
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise ValueError(f"register: expected a {self.base.__name__} subclass, got {cls!r}")
        name = getattr(cls, "name", "")
        if not name or not isinstance(name, str):
            raise ValueError(f"register: {cls.__qualname__} has no name (set the class attribute 'name')")
        known = self._entries.get(name)
        if known is not None and known is not cls and known != _path(cls):
            raise ValueError(f"{self.kind} name {name!r} is already registered by "
                             f"{known if isinstance(known, str) else _path(known)}")
        self._entries[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def resolve(self, name: str) -> Any:
        """The class registered as ``name``, or the object at the import path ``module:Class``
        (a subclass of ``base``; for spaces also an instance); ``ValueError`` if neither."""
        if not isinstance(name, str):
            raise ValueError(f"{self.kind}: expected a name or 'module:Class', got {type(name).__name__}")
        entry = self._entries.get(name)
        if entry is None and ":" not in name:
            hint = difflib.get_close_matches(name, self.names(), n=1)
            raise ValueError(f"{self.kind}: unknown name {name!r}; allowed: {', '.join(self.names())}, or "
                             "module:Class" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        if entry is None:
            entry = name  # not registered: an import path
        obj = self._import(entry) if isinstance(entry, str) else entry
        if isinstance(obj, self.base) or (isinstance(obj, type) and issubclass(obj, self.base)):
            return obj
        raise ValueError(f"{self.kind} {name!r}: {obj!r} is not a {self.base.__name__} subclass")

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> T:
        """An instance of the class ``name`` resolves to, built with ``args`` and ``kwargs``."""
        cls = self.resolve(name)
        if not isinstance(cls, type):
            raise ValueError(f"{self.kind} {name!r} is an instance; it takes no {self.arguments}")
        try:
            return cls(*args, **kwargs)
        except TypeError as e:
            raise ValueError(f"{self.kind} {name!r}: bad {self.arguments} {kwargs}: {e}") from None

    def _import(self, path: str) -> Any:
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise ValueError(f"{self.kind} {path!r}: an import path must look like 'module:Class'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"{self.kind} {path!r}: cannot import it ({e}); is it on PYTHONPATH or installed?") \
                from None
        try:
            return getattr(module, attr)
        except AttributeError:
            found = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, self.base) and v.__module__ == module_name)
            raise ValueError(f"{self.kind} {path!r}: module {module_name!r} has no {attr!r}"
                             + (f"; {self.base.__name__} classes there: {', '.join(found)}" if found else "")) \
                from None


def _path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"
