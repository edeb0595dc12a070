from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Database


@pytest.fixture
def store(db: Callable[[], Database]) -> Database:
    """One upgraded database, on each backend in turn."""
    return db()
