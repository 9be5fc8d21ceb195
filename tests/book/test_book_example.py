"""examples/book_dropin.py runs and shows what it says: npgated.book's layers in the book's loop
end where npgated's own loop ends; npgated's own layers in the book's loop do not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "book_dropin.py"


def test_book_dropin_example():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--iters", "60"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    diffs = dict(re.findall(r"^([AC]) .*differ from B's by (\S+)", out.stdout, re.M))
    assert set(diffs) == {"A", "C"}, out.stdout
    assert float(diffs["A"]) <= 1e-5, out.stdout  # the same SGD, float32 rounding apart
    assert float(diffs["C"]) >= 1e-2, out.stdout  # the running sum: another optimizer
