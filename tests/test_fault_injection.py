"""The fault-injection check, small: a real distillation killed with SIGKILL inside a training
step, inside a checkpoint save, between the renames of a checkpoint swap and while the final
model is put in place; each resumed run must end byte-identical to an uninterrupted one, with
no stale output after the kill and no leftovers after the resume. The full check (every crash
point) is ``benchmarks/fault_injection.py``."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import fault_injection  # noqa: E402

POINTS = ["step:3", "checkpoint: best written:1", "replace checkpoint: old moved aside:1",
          "replace model: new in place:1"]


@pytest.fixture(scope="module")
def reference(teacher, tmp_path_factory):
    return fault_injection.reference_run(teacher, tmp_path_factory.mktemp("faults"))


def test_the_run_passes_every_kind_of_crash_point(reference):
    _, points = reference
    assert set(POINTS) <= set(points)
    assert sum(p.startswith("step:") for p in points) == 8


@pytest.mark.slow
@pytest.mark.parametrize("point", POINTS)
def test_killed_then_resumed_ends_like_an_uninterrupted_run(teacher, reference, tmp_path,
                                                            point):
    out, _ = reference
    assert fault_injection.kill_and_resume(teacher, out, tmp_path / "killed", point) == []


def test_crash_points_do_nothing_without_the_variables(monkeypatch, tmp_path):
    from textdistill import faults

    monkeypatch.setattr(faults, "_passed", {})
    monkeypatch.delenv(faults.CRASH_AT_ENV, raising=False)
    monkeypatch.setenv(faults.CRASH_LOG_ENV, str(tmp_path / "log"))
    faults.crash_point("x")
    faults.crash_point("x")
    monkeypatch.setenv(faults.CRASH_AT_ENV, "x:1")  # the first pass is gone: no kill
    faults.crash_point("y")
    assert (tmp_path / "log").read_text().splitlines() == ["x:1", "x:2", "y:1"]
