"""Immutable records without ``typing`` or ``dataclasses``: start-up time (issue 15).

``NamedTuple`` here is :class:`typing.NamedTuple` as a base class, made the same way (a
:func:`collections.namedtuple` of the class's annotated fields and their defaults, with the
class body's methods, properties and docstring copied onto it), but without importing
``typing`` (~2 ms); and a record is made in a fraction of a frozen dataclass's time, without
``dataclasses`` and the ``inspect`` it imports (~7 ms). A module writes::

    TYPE_CHECKING = False  # mypy reads True: it checks the class as typing's NamedTuple
    if TYPE_CHECKING:
        from typing import NamedTuple
    else:
        from .._records import NamedTuple

A record is a tuple: immutable, compared and hashed by its fields, pickled by its class's
name, copied with changes by ``_replace``.
"""

from __future__ import annotations

import collections

TYPE_CHECKING = False  # typing's, which buildjail run does not import (mypy reads True)
if TYPE_CHECKING:
    from typing import Any

_PROHIBITED = frozenset({"__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                         "_field_defaults", "_make", "_replace", "_asdict", "_source"})
"""What a record's class body may not define (typing's own list)."""
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})


class _RecordMeta(type):
    """Makes each class written ``class Name(NamedTuple): ...`` a named tuple."""

    def __new__(cls, typename: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        if bases != (_Record,):
            raise TypeError(f"{typename}: a record derives from NamedTuple alone")
        fields: dict[str, Any] = namespace.get("__annotations__", {})
        defaults = [name for name in fields if name in namespace]
        if any(name not in namespace for name in list(fields)[len(fields) - len(defaults):]):
            raise TypeError(f"{typename}: a field without a default follows one with a "
                            "default")
        values = [namespace[name] for name in defaults]
        record = collections.namedtuple(typename, fields, defaults=values,  # type: ignore[misc]
                                        module=namespace["__module__"])
        record.__annotations__ = fields
        for key, value in namespace.items():
            if key in _PROHIBITED:
                raise AttributeError(f"{typename}: cannot overwrite NamedTuple attribute {key}")
            if key not in _SPECIAL and key not in fields:
                setattr(record, key, value)
        return record


_Record = type.__new__(_RecordMeta, "_Record", (), {})
"""The base a record's class statement names (the class made derives from tuple alone)."""


def NamedTuple() -> None:  # noqa: N802 - typing's name, which mypy reads in its place
    """Never called: a class derives from it (``__mro_entries__``), as from typing's."""
    raise TypeError("NamedTuple is a base class here, not a function")


NamedTuple.__mro_entries__ = lambda bases: (_Record,)  # type: ignore[attr-defined]


class Checked:
    """The first base of a record checked whenever one is made, by its class, ``_make``,
    ``_replace`` or ``copy.replace`` (``class Policy(Checked, _PolicyFields)``): its
    ``_check`` raises. (Unpickling and ``copy.copy`` make none anew: not checked, as a
    dataclass's ``__post_init__`` was not.)"""

    __slots__ = ()

    if not TYPE_CHECKING:  # mypy reads the record's own signatures
        def __init__(self, *args, **kwargs):
            self._check()

        def _replace(self, **changes):
            record = super()._replace(**changes)
            record._check()
            return record

        __replace__ = _replace  # copy.replace (Python 3.13)

        @classmethod
        def _make(cls, iterable):
            record = super()._make(iterable)
            record._check()
            return record

    def _check(self) -> None:
        """Raise if the record's fields do not make one."""
        raise NotImplementedError
