"""Unit tests run torch on one thread: tiny models gain nothing from intra-op threads, and on a busy
2-core machine they lose 10-50x to contention."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
