"""Shared pytest set-up: small thread counts (CI has 2 cores), the real-data folder, tmp jobs."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real scans; tests that need it skip when it is absent."""
    from INRReconLib.cases import data_dir

    d = data_dir()
    if d is None:
        pytest.skip("shared real data (../shared/data) not found")
    return d
