"""Atomic writes never leave a half-written file; run records carry what results need."""

from __future__ import annotations

import json
import os

import pytest

from awm_lib.errors import AWMError, DicomError
from awm_lib.io_utils import atomic_path, run_record, write_json_atomic


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"], "temporary file left behind"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert (os.stat(target).st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_write_json_atomic_handles_numpy(tmp_path):
    import numpy as np

    write_json_atomic(tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(3)})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 0.5, "b": [0, 1, 2]}


def test_run_record_has_provenance():
    rec = run_record("python -m awm_lib train", seed=3, extra_field=1)
    assert rec["command"] == "python -m awm_lib train" and rec["seed"] == 3
    assert rec["device"] and rec["date"].endswith("Z") and rec["extra_field"] == 1
    assert {"awm_lib", "torch", "python"} <= set(rec["versions"])


def test_error_one_line_names_the_file():
    e = DicomError("no pixel data\n  in this file", path="/x/a.dcm")
    assert e.one_line() == "/x/a.dcm: no pixel data in this file"
    assert isinstance(e, AWMError)
