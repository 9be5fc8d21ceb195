"""benchmarks/book_dropin.py: the book's scripts with its layers and npgated.book's, the plumbing.

The real comparison needs the book's repository; this test needs none of it. A book checkout
in miniature is written into a temporary folder: ``common/`` with the modules the driver and
the shim import (its "own" layers are npgated.book's under other module names, so both runs
compute the same numbers and the report can be checked), small model files for the three
chapters written here, a ``dataset/sequence.py`` with a few hundred random questions, and
synthetic PTB. The benchmark then runs for real: the shim, the copied driver, two processes
per chapter, the JSON result and the Markdown report.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

FILES = {
    "common/__init__.py": "",
    "common/config.py": "GPU = False\n",
    "common/np.py": "import numpy as np  # noqa: F401\n",
    "common/functions.py": "from npgated.functional import sigmoid, softmax  # noqa: F401\n",
    "common/layers.py": "from common.np import *  # noqa: F401,F403\n",
    "common/time_layers.py": (
        "from common.np import *  # noqa: F401,F403\n"
        "from npgated.book import time_layers as _b\n"
        "class TimeEmbedding(_b.TimeEmbedding): pass\n"
        "class TimeLSTM(_b.TimeLSTM): pass\n"
        "class TimeAffine(_b.TimeAffine): pass\n"
        "class TimeSoftmaxWithLoss(_b.TimeSoftmaxWithLoss): pass\n"
    ),
    "common/optimizer.py": (
        "from npgated.optim.adam import Adam  # noqa: F401\n"
        "from npgated.optim.sgd import SGD  # noqa: F401\n"
    ),
    "common/trainer.py": (
        "import numpy as np\n"
        "def remove_duplicate(params, grads):\n"
        "    return list(params), list(grads)\n"
        "class RnnlmTrainer:\n"
        "    def __init__(self, model, optimizer):\n"
        "        self.model, self.optimizer, self.time_idx = model, optimizer, 0\n"
        "    def get_batch(self, x, t, batch_size, time_size):\n"
        "        jump = len(x) // batch_size\n"
        "        pos = (np.arange(batch_size)[:, None] * jump + self.time_idx\n"
        "               + np.arange(time_size)[None, :]) % len(x)\n"
        "        self.time_idx += time_size\n"
        "        return x[pos], t[pos]\n"
    ),
    "common/util.py": (
        "from npgated.optim.clip import clip_grads  # noqa: F401\n"
        "def eval_seq2seq(model, question, correct, id_to_char, verbose=False,\n"
        "                 is_reverse=False):\n"
        "    correct = correct.flatten()\n"
        "    guess = model.generate(question, int(correct[0]), len(correct) - 1)\n"
        "    return int(list(guess) == [int(c) for c in correct[1:]])\n"
    ),
    "ch06/rnnlm.py": (
        "from common.time_layers import *  # noqa: F403\n"
        "class Rnnlm:\n"
        "    def __init__(self, V, D, H):\n"
        "        r = np.random.randn  # noqa: F405\n"
        "        f = lambda *s: (r(*s) * 0.1).astype('f')\n"
        "        self.layers = [TimeEmbedding(f(V, D)),  # noqa: F405\n"
        "                       TimeLSTM(f(D, 4 * H), f(H, 4 * H), f(4 * H), stateful=True),"
        "  # noqa: F405\n"
        "                       TimeAffine(f(H, V), f(V))]  # noqa: F405\n"
        "        self.loss_layer = TimeSoftmaxWithLoss()  # noqa: F405\n"
        "        self.params = sum((l.params for l in self.layers), [])\n"
        "        self.grads = sum((l.grads for l in self.layers), [])\n"
        "    def forward(self, xs, ts):\n"
        "        for layer in self.layers:\n"
        "            xs = layer.forward(xs)\n"
        "        return self.loss_layer.forward(xs, ts)\n"
        "    def backward(self):\n"
        "        d = self.loss_layer.backward()\n"
        "        for layer in reversed(self.layers):\n"
        "            d = layer.backward(d)\n"
    ),
    "ch07/seq2seq.py": (
        "from common.time_layers import *  # noqa: F403\n"
        "class Part:\n"
        "    pass\n"
        "class Seq2seq:\n"
        "    def __init__(self, V, D, H):\n"
        "        r = np.random.randn  # noqa: F405\n"
        "        f = lambda *s: (r(*s) * 0.1).astype('f')\n"
        "        self.encoder, self.decoder = Part(), Part()\n"
        "        self.encoder.embed = TimeEmbedding(f(V, D))  # noqa: F405\n"
        "        self.encoder.lstm = TimeLSTM(f(D, 4 * H), f(H, 4 * H), f(4 * H))  # noqa: F405\n"
        "        self.decoder.embed = TimeEmbedding(f(V, D))  # noqa: F405\n"
        "        self.decoder.lstm = TimeLSTM(f(D, 4 * H), f(H, 4 * H), f(4 * H),"
        " stateful=True)  # noqa: F405\n"
        "        self.decoder.affine = TimeAffine(f(H, V), f(V))  # noqa: F405\n"
        "        self.loss = TimeSoftmaxWithLoss()  # noqa: F405\n"
        "        layers = [self.encoder.embed, self.encoder.lstm, self.decoder.embed,\n"
        "                  self.decoder.lstm, self.decoder.affine]\n"
        "        self.params = sum((l.params for l in layers), [])\n"
        "        self.grads = sum((l.grads for l in layers), [])\n"
        "    def forward(self, xs, ts):\n"
        "        self.hs = self.encoder.lstm.forward(self.encoder.embed.forward(xs))\n"
        "        self.decoder.lstm.set_state(self.hs[:, -1])\n"
        "        out = self.decoder.lstm.forward(self.decoder.embed.forward(ts[:, :-1]))\n"
        "        return self.loss.forward(self.decoder.affine.forward(out), ts[:, 1:])\n"
        "    def backward(self):\n"
        "        d = self.decoder.affine.backward(self.loss.backward())\n"
        "        self.decoder.embed.backward(self.decoder.lstm.backward(d))\n"
        "        dhs = np.zeros_like(self.hs)  # noqa: F405\n"
        "        dhs[:, -1] = self.decoder.lstm.dh\n"
        "        self.encoder.embed.backward(self.encoder.lstm.backward(dhs))\n"
        "    def generate(self, xs, start_id, n):\n"
        "        hs = self.encoder.lstm.forward(self.encoder.embed.forward(xs))\n"
        "        self.decoder.lstm.set_state(hs[:, -1])\n"
        "        out, sid = [], start_id\n"
        "        for _ in range(n):\n"
        "            x = np.array([[sid]])  # noqa: F405\n"
        "            h = self.decoder.lstm.forward(self.decoder.embed.forward(x))\n"
        "            sid = int(self.decoder.affine.forward(h).argmax())\n"
        "            out.append(sid)\n"
        "        return out\n"
    ),
    "ch08/attention_layer.py": (
        "from npgated.layers.attention import TimeAttention as _A\nclass TimeAttention(_A): pass\n"
    ),
    "ch08/attention_seq2seq.py": (
        "from ch07.seq2seq import Seq2seq\n"
        "from ch08.attention_layer import TimeAttention\n"
        "class AttentionSeq2seq(Seq2seq):\n"
        "    def __init__(self, V, D, H):\n"
        "        super().__init__(V, D, H)\n"
        "        self.decoder.attention = TimeAttention()\n"
    ),
    "dataset/__init__.py": "",
    "dataset/addition.txt": "16+75  _91  \n",
    "dataset/date.txt": "september 27, 1994           _1994-09-27\n",
    "dataset/sequence.py": (
        "import numpy\n"
        "def load_data(file_name='addition.txt', seed=1984):\n"
        "    numpy.random.seed(seed)\n"
        "    x = numpy.random.randint(0, 13, (300, 7))\n"
        "    t = numpy.random.randint(0, 13, (300, 5))\n"
        "    return (x[:270], t[:270]), (x[270:], t[270:])\n"
        "def get_vocab():\n"
        "    return {str(i): i for i in range(13)}, {i: str(i) for i in range(13)}\n"
    ),
}


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory):
    """(a miniature book checkout, synthetic PTB)."""
    spec = importlib.util.spec_from_file_location("_npgated_conftest", HERE / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    root = tmp_path_factory.mktemp("book_dropin")
    for rel, text in FILES.items():
        path = root / "book" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    ptb = conftest.write_synthetic_ptb(root / "ptb", n_train=1500, n_eval=100)
    return root / "book", ptb


def test_printed_points_are_the_books_trainer_prints(benchmarks):
    bd = benchmarks("book_dropin")
    losses = [float(k) for k in range(45)]
    points = bd.printed_points(losses, "ch07")
    assert points == [(1, 0.0), (21, sum(range(1, 21)) / 20), (41, sum(range(21, 41)) / 20)]
    ppl = bd.printed_points([1.0, 2.0, 3.0], "ch06")
    assert ppl == [(1, pytest.approx(math.e))]


def test_both_layer_sets_run_every_chapter_and_are_reported(fake_book, benchmarks):
    book, ptb = fake_book
    bd = benchmarks("book_dropin")
    logged = []
    result = bd.run_book_dropin(
        book, max_iters=3, data_dir=ptb, eval_questions=4, threads=1, log=logged.append, timeout=300
    )
    assert "error" not in result, result.get("error")
    assert [line.split(":")[0] for line in logged] == [
        "ch06 book",
        "ch06 npgated",
        "ch07 npgated",
        "ch07 book",
        "ch08 book",
        "ch08 npgated",
    ]
    for chapter in bd.CHAPTERS:
        r = result["chapters"][chapter]
        assert r["book"]["layers_module"] == "common.time_layers"
        assert r["npgated"]["layers_module"] == "npgated.book.time_layers"
        for impl in bd.IMPLS:
            assert len(r[impl]["losses"]) == len(r[impl]["step_s"]) == 3
            assert all(s > 0 for s in r[impl]["step_s"]) and r[impl]["process_s"] > 0
        # the miniature's "own" layers are npgated.book's: one trajectory
        for a, b in zip(r["book"]["losses"], r["npgated"]["losses"]):
            assert b == pytest.approx(a, rel=1e-6)
        c = r["comparison"]
        assert c["max_rel_loss_diff"] <= 1e-6
        assert c["step_speedup"] == pytest.approx(c["step_ms"]["book"] / c["step_ms"]["npgated"])
    assert result["chapters"]["ch08"]["book"]["attention_module"] == "ch08.attention_layer"
    assert result["chapters"]["ch08"]["npgated"]["attention_module"] == "npgated.layers.attention"
    assert result["chapters"]["ch07"]["npgated"]["eval"]["questions"] == 4
    assert result["chapters"]["ch06"]["book"]["hyper"]["seed"] == 1984

    text = bd.markdown(result)
    for chapter in bd.CHAPTERS:
        assert bd.TITLES[chapter] in text
    assert "| 1 |" in text and "speed-up" in text and "evaluation of 4 test questions" in text
    assert "npgated.book.time_layers" in text


def test_a_bad_book_dir_is_one_clear_line(tmp_path, benchmarks, capsys):
    bd = benchmarks("book_dropin")
    assert bd.main(["--book-dir", str(tmp_path), "--chapters", "ch07"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ch07/seq2seq.py" in err and "not a usable checkout" in err


def test_a_failing_layer_set_is_reported_and_the_other_still_runs(fake_book, benchmarks, tmp_path):
    """The book's own layers fail on CuPy (its issues #4, #7); the report must still show
    npgated.book's run and say what failed, not stop."""
    import shutil  # noqa: PLC0415

    book, _ = fake_book
    broken = tmp_path / "book"
    shutil.copytree(book, broken)
    layers = broken / "common" / "time_layers.py"
    layers.write_text(
        layers.read_text()
        + (
            "class TimeLSTM(_b.TimeLSTM):\n"
            "    def backward(self, dhs):\n"
            "        raise AttributeError(\"module 'cupy' has no attribute 'scatter_add'\")\n"
        )
    )
    bd = benchmarks("book_dropin")
    result = bd.run_book_dropin(
        broken,
        chapters=("ch07",),
        max_iters=2,
        eval_questions=0,
        threads=1,
        log=lambda _: None,
        timeout=300,
    )
    assert result["error"] == "failed: ch07 book"
    ch07 = result["chapters"]["ch07"]
    assert "scatter_add" in ch07["book"]["error"] and "comparison" not in ch07
    assert len(ch07["npgated"]["losses"]) == 2
    text = bd.markdown(result)
    assert "**failed**" in text and "scatter_add" in text and "npgated.book: 2 iterations" in text
