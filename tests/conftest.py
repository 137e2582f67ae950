"""Shared test fixtures: paths to ../shared (skip cleanly when absent), GPU skipping, and the
`numeric` mark that `make test-portable` selects."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SVD_SHARED", REPO.parent / "shared"))
TESTDATA = SHARED / "testdata"
FIXTURES = SHARED / "reference" / "fixtures"

os.environ.setdefault("OMP_NUM_THREADS", "2")


# A module that compares computed floats (tolerances, reference values, the helpers of
# numeric.py) is a numeric one: `make test-portable` runs these under other CPU kernels, BLAS
# instruction sets and thread counts.
NUMERIC = re.compile(r"assert_close|allclose|approx\(|assert_ulp|close_ulps|max_diff|max\(\) <=")


@functools.cache
def _is_numeric(path: str) -> bool:
    return bool(NUMERIC.search(Path(path).read_text()))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_numeric(str(item.path)):
            item.add_marker(pytest.mark.numeric)
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not TESTDATA.is_dir():
        pytest.skip("../shared/testdata is not present")
    return TESTDATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/reference/fixtures is not present")
    return FIXTURES


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    ref = SHARED / "reference"
    if not ref.is_dir():
        pytest.skip("../shared/reference is not present")
    return ref
