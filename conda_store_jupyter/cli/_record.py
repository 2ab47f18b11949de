"""``Record``: an immutable value class for the CLI's fast path.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``tokenize``, ``dis``): about 10 ms, a
sixth of the budget of a cached ``conda-store run``. These few value types need only keyword
construction with defaults, equality, hashing and a repr that leaves secrets out.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs ~5 ms on the cached `run` path; mypy reads the name
if TYPE_CHECKING:
    from typing import Any, ClassVar


class Record:
    """Subclasses list their fields in ``__slots__`` and the optional ones in ``_defaults``."""

    __slots__ = ()
    _defaults: ClassVar[dict[str, Any]] = {}
    _secret: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        for name in self.__slots__:
            if name in values:
                value = values[name]
            elif name in self._defaults:
                value = self._defaults[name]
            else:
                raise TypeError(f"{type(self).__name__} needs {name!r}")
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n not in self._secret)
        return f"{type(self).__name__}({shown})"
