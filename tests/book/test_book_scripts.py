"""The book's own model files, unchanged, on npgated.book through npgated.book.shim.

Needs a checkout of the book's repository ("Deep Learning from Scratch 2",
oreilly-japan/deep-learning-from-scratch-2): ``$NPGATED_BOOK_DIR`` or ``/tmp/dlfs2``. It is
not in CI (the project does not ship the book's code), so there the tests skip and say so.

Each case runs one small driver twice, each time in a subprocess of its own: once with the
book's root on ``PYTHONPATH`` (the book's layers), once with the shim first (npgated's). The
driver builds the book's model from its model file (``ch06/rnnlm.py``, ``ch07/seq2seq.py``,
``ch08/attention_seq2seq.py``) with ``np.random.seed`` fixed, and runs a few iterations of
the book's loop with the book's ``remove_duplicate``, ``clip_grads`` and optimizer on random
batches; the losses must agree to float32 rounding. The book's files are only read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npgated.book.shim import write_shim


def _book_dir():
    for candidate in (os.environ.get("NPGATED_BOOK_DIR"), "/tmp/dlfs2"):
        if candidate and (Path(candidate) / "common" / "time_layers.py").is_file():
            return Path(candidate).resolve()
    return None


BOOK = _book_dir()
pytestmark = pytest.mark.skipif(
    BOOK is None,
    reason="the book's repository is not checked out (set NPGATED_BOOK_DIR; it is not part of CI)",
)
pytest.importorskip("matplotlib")  # the book's common/trainer.py imports pyplot

DRIVER = """
import json, sys
import numpy
chapter = sys.argv[1]
if chapter == "ch06":
    from rnnlm import Rnnlm
    from common.optimizer import SGD
    V, make, opt = 30, (lambda: Rnnlm(30, 8, 10)), SGD(1.0)
elif chapter == "ch07":
    from seq2seq import Seq2seq
    from common.optimizer import Adam
    V, make, opt = 13, (lambda: Seq2seq(13, 6, 12)), Adam()
else:
    from attention_seq2seq import AttentionSeq2seq
    from common.optimizer import Adam
    V, make, opt = 13, (lambda: AttentionSeq2seq(13, 6, 12)), Adam()
from common.trainer import remove_duplicate
from common.util import clip_grads
numpy.random.seed(5)
model = make()
rng = numpy.random.default_rng(0)
losses = []
for _ in range(8):
    xs, ts = rng.integers(0, V, (4, 7)), rng.integers(0, V, (4, 7 if chapter == "ch06" else 6))
    losses.append(float(model.forward(xs, ts)))
    model.backward()
    params, grads = remove_duplicate(model.params, model.grads)
    clip_grads(grads, 0.5)
    opt.update(params, grads)
lstm = model.layers[1] if chapter == "ch06" else model.encoder.lstm
modules = [type(lstm).__module__]
if chapter == "ch08":
    modules.append(type(model.decoder.attention).__module__)
print(json.dumps({"losses": losses, "modules": modules}))
"""


ROOT = Path(__file__).resolve().parents[2]  # npgated's checkout, for an uninstalled npgated


def _run(driver, chapter, pythonpath, cwd):
    pythonpath = [*pythonpath, ROOT]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(driver), chapter],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("chapter", ["ch06", "ch07", "ch08"])
def test_the_books_model_file_trains_the_same_on_npgated_book(tmp_path, chapter):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    shim = write_shim(tmp_path / "shim")
    chapter_dir = BOOK / chapter
    own = _run(driver, chapter, [BOOK, chapter_dir], tmp_path)
    ours = _run(driver, chapter, [shim, BOOK, chapter_dir], tmp_path)
    assert own["modules"] == ["common.time_layers", "ch08.attention_layer"][: len(own["modules"])]
    assert all(m.startswith("npgated.") for m in ours["modules"]), ours["modules"]
    assert len(own["losses"]) == len(ours["losses"]) == 8
    for k, (a, b) in enumerate(zip(own["losses"], ours["losses"])):
        assert b == pytest.approx(a, rel=1e-5), f"{chapter} iteration {k}: book {a}, npgated {b}"
