"""Unit tests run torch on one thread: tiny models gain nothing from intra-op threads, and on a busy
2-core machine they lose 10-50x to contention."""

from __future__ import annotations

from typing import Iterator

import pytest
import torch

from tests.scoring_service import Service


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def service() -> Iterator[Service]:
    """A scriptable scoring service on 127.0.0.1 (tests/scoring_service.py)."""
    s = Service()
    yield s
    s.close()
