"""pytest setup for adampi.torch: run under mpirun (every rank runs every test, in the same order).

The reference is the official package adamp 0.3.0 where it is found (ADAMP_PATH, else
../shared/reference next to the checkout), else the project's own transcription of the same
maths, tests/reference/adamp_ref.py: so the tests pass where ../shared is absent."""
import importlib
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "src", "python"))


def _reference():
    candidates = [os.environ.get("ADAMP_PATH"), os.path.join(ROOT, "..", "shared", "reference")]
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "adamp", "__init__.py")):
            sys.path.insert(0, os.path.abspath(path))
            return importlib.import_module("adamp"), "the official adamp 0.3.0 at " + os.path.abspath(path)
    sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
    return importlib.import_module("adamp_ref"), "tests/reference/adamp_ref.py (../shared is absent)"


REFERENCE, REFERENCE_NAME = _reference()


def pytest_report_header(config):
    return "adampi.torch reference: " + REFERENCE_NAME


@pytest.fixture
def ref():
    return REFERENCE
