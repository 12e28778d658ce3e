"""Fixtures of the fault suite (its helpers are in tests/support.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def uri(tmp_path, new_store):
    return new_store(tmp_path)
