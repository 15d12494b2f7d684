"""buildjail._records: typing's NamedTuple made without typing, and records checked when made."""

from __future__ import annotations

import pickle

import pytest

from buildjail.errors import PolicyError
from buildjail.limits import Limits

TYPE_CHECKING = False  # as the package's modules write it: mypy reads typing's
if TYPE_CHECKING:
    from typing import NamedTuple
else:
    from buildjail._records import NamedTuple


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    """The second coordinate."""

    @property
    def total(self) -> int:
        """Both coordinates added."""
        return self.x + self.y

    def moved(self) -> Point:
        """One further along x."""
        return self._replace(x=self.x + 1)


def test_a_record_is_a_named_tuple_with_its_class_body() -> None:
    point = Point(1)
    assert (point, point.total, point.moved()) == (Point(1, 0), 1, Point(2, 0))
    assert repr(point) == "Point(x=1, y=0)"
    assert Point.__doc__ == "A point." and Point.__module__ == __name__
    assert Point._fields == ("x", "y") and Point._field_defaults == {"y": 0}
    assert Point.__mro__[1:] == (tuple, object)
    assert pickle.loads(pickle.dumps(point)) == point
    assert hash(point) == hash(Point(x=1, y=0))
    with pytest.raises(AttributeError):
        point.x = 2  # type: ignore[misc]


def test_a_record_refuses_what_typing_refuses() -> None:
    with pytest.raises(TypeError, match="without a default follows"):
        class _Late(NamedTuple):
            x: int = 0
            y: int  # type: ignore[misc]  # mypy refuses it as well
    with pytest.raises(AttributeError, match="cannot overwrite NamedTuple attribute _make"):
        class _Own(NamedTuple):
            x: int

            def _make(self) -> None:  # type: ignore[misc]
                """Not allowed."""
    with pytest.raises(TypeError, match="derives from NamedTuple alone"):
        class _Mixed(NamedTuple, int):  # type: ignore[misc]
            x: int


def test_a_checked_record_is_checked_when_made_and_when_replaced() -> None:
    assert Limits(memory=1)._replace(memory=2) == Limits(memory=2)
    with pytest.raises(PolicyError, match="limit memory must be positive"):
        Limits(memory=0)
    with pytest.raises(PolicyError, match="limit disk must be positive"):
        Limits(memory=1)._replace(disk=-1)


def test_a_checked_record_is_checked_when_made_from_an_iterable_or_copy_replaced() -> None:
    """``_make`` and ``__replace__`` (``copy.replace`` on Python 3.13) are namedtuple's own
    ways round ``__init__``: a checked record checks there too; the control, a valid one,
    is made."""
    fields = len(Limits._fields)
    assert Limits._make([None] * fields) == Limits()
    with pytest.raises(PolicyError, match="limit wall_time must be positive"):
        Limits._make([-1] + [None] * (fields - 1))
    copy_replace = getattr(Limits(), "__replace__")  # noqa: B009 - not in 3.11's stubs
    assert copy_replace(memory=2) == Limits(memory=2)
    with pytest.raises(PolicyError, match="limit memory must be positive"):
        copy_replace(memory=0)
