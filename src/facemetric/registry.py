"""Name registries: components are looked up by name instead of if/elif chains.

>>> MODELS = Registry("model")
>>> @MODELS.register("lenets++")
... def lenets(**kw): ...
>>> MODELS.build("lenets++", embedding_dim=2)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from facemetric.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to factories (classes or functions)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}
        self._aliases: set[str] = set()

    def register(self, name: str, *aliases: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            for key in (name, *aliases):
                key = key.lower()
                if key in self._items:
                    raise KeyError(f"{self.kind} {key!r} is already registered")
                self._items[key] = factory
            self._aliases.update(a.lower() for a in aliases)
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[str(name).lower()]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, **kwargs: Any) -> T:
        factory = self.get(name)
        try:
            return factory(**kwargs)
        except TypeError as exc:  # wrong/unknown keyword for this component
            raise ConfigError(f"{self.kind} {name!r}: {exc}") from None

    def names(self, aliases: bool = False) -> list[str]:
        """Registered names (primary names only unless ``aliases``)."""
        return sorted(k for k in self._items if aliases or k not in self._aliases)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._items
