"""Shared test fixtures: where reference data lives."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "tests" / "data"
# The full reference set (512/1024 outputs, process_* cases) sits beside the repo in CI and on dev machines.
SHARED_REFERENCE_DIR = REPO_ROOT.parent / "shared" / "gpen-reference"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA_DIR


@pytest.fixture(scope="session")
def shared_reference_dir() -> Path:
    if not SHARED_REFERENCE_DIR.is_dir():
        pytest.skip(f"full GPEN reference set not found at {SHARED_REFERENCE_DIR}")
    return SHARED_REFERENCE_DIR
