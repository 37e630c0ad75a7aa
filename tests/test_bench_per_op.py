"""Smoke test of bench_mnist's per-op row (it measures; the timing itself is never a test)."""

from __future__ import annotations

import re

import pytest

from helpers import ROOT, run_python


def test_the_per_op_row_prints_ours_pytorchs_and_the_ratio():
    pytest.importorskip("torch")
    done = run_python([ROOT / "benchmarks" / "bench_mnist.py", "--per-op-only", "--repeats", "1",
                       "--threads", "1"], timeout=300)
    row = re.search(r"\| per-op overhead \(16-elem chain, fwd\+bwd\) \| ([\d.]+) us \| "
                    r"([\d.]+) us \| ([\d.]+)x \| <= 0.8x \|", done.stdout)
    assert row, done.stdout
    ours, theirs, ratio = map(float, row.groups())
    assert ours > 0 and theirs > 0 and ratio == pytest.approx(ours / theirs, abs=0.01)
