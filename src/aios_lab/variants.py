"""Named variants of one concept, registered by their classes.

One table per concept (training methods, sweep cell kinds, sweep executors,
model kinds, benchmark learning modes): a class registers itself under its
``name`` with ``@variants.register``, the built-in ones are imported on the
first lookup, and an unknown name, or a name two classes claim, is the
concept's own typed error. A new variant is a new
class in a new module; nothing else is edited (the way virtme-ng registers
its architectures).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from .errors import AiosError

T = TypeVar("T", bound=type)


class Variants(Generic[T]):
    def __init__(self, what: str, error: type[AiosError], hint: str,
                 builtin: Callable[[], None] | None = None) -> None:
        """``what`` names the concept in errors ("training method"); ``hint``
        introduces the known names ("use"); ``builtin`` imports the modules
        that register the built-in variants."""
        self.what, self.error, self.hint = what, error, hint
        self._builtin = builtin
        self._by_name: dict[str, T] = {}

    def register(self, cls: T) -> T:
        taken = self._by_name.get(cls.name)
        if taken is not None and taken is not cls:
            raise self.error(f"{self.what} {cls.name!r} is registered twice ({taken.__name__}, {cls.__name__})")
        self._by_name[cls.name] = cls
        return cls

    def _load(self) -> None:
        if self._builtin is not None:
            self._builtin()

    def names(self) -> list[str]:
        self._load()
        return sorted(self._by_name)

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._by_name[name]
        except KeyError:
            raise self.error(f"unknown {self.what} {name!r}",
                             hint=f"{self.hint} {', '.join(sorted(self._by_name))}") from None

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._by_name
