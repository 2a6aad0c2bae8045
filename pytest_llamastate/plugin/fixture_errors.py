"""A fixture's failure as a test error of one line: the test errors, the next one runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ..state.store import os_problem

__all__ = ["as_test_error"]


@contextmanager
def as_test_error(
    *errors: type[Exception], doing: str = "", about: Path | None = None
) -> Iterator[None]:
    """Turn our own errors into a test error showing only their message; with ``doing``,
    OS errors too (a full disk, a read-only one, permissions, too many open files), as
    ``<doing>: <path>: <cause>`` (``about`` when the error names no path): the test
    errors, the next one runs.

    The failure is raised ``from None``: inside a context manager's ``__exit__`` the
    error is still being handled even outside the ``except`` block, so the report would
    add "During handling of the above exception" and the message twice.
    """
    try:
        yield
    except errors as exc:
        problem = str(exc)
    except OSError as exc:
        if not doing:
            raise
        problem = f"{doing}: {os_problem(exc, about)}"
    else:
        return
    raise pytest.fail.Exception(problem, pytrace=False) from None
