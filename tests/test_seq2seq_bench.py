"""benchmarks/seq2seq.py: the book's ch. 7-8 scripts against npgated, its plumbing.

The real comparison needs the book's checkout; these tests make one in miniature in a
temporary folder: synthetic ``addition.txt``/``date.txt``, training scripts written here that
carry the lines the benchmark edits (``is_reverse = False``, ``max_epoch = 25``, the model
lines) and print the book's output format (``Q`` lines, then ``val acc X%``) with accuracies
that encode which edits reached them, and, for the evaluation, stand-ins for the book's
modules (``dataset/sequence.py``, ``common/util.py``, ``ch08/attention_seq2seq.py``) that
answer through npgated, so the book's loop and ``npgated eval`` must print the same count.
npgated's side is the real command line (``python -m npgated train`` / ``eval``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from npgated.data import sequence
from npgated.interop.book_seq2seq import model_to_book
from npgated.models.seq2seq import AttentionSeq2seq

HERE = Path(__file__).resolve().parent

# a training script with the lines of the book's ch07/train_seq2seq.py the benchmark edits;
# its accuracy after epoch e is e + 0.1 if reversed + 0.01 if the peeky line is active
FAKE_TRAIN = """\
def Seq2seq(*args):
    return "Seq2seq"
def PeekySeq2seq(*args):
    return "PeekySeq2seq"
def AttentionSeq2seq(*args):
    return "AttentionSeq2seq"
vocab_size = wordvec_size = hidden_size = 1
{reverse}
max_epoch = 25
{models}
for epoch in range(max_epoch):
    print('| epoch %d |  iter 1 / 1 | time 0[s] | loss 1.00' % (epoch + 1))
    print('Q 1+1')
    print('T 2')
    acc = epoch + 1 + (0.1 if is_reverse else 0) + (0.01 if model == 'PeekySeq2seq' else 0)
    print('val acc %.3f%%' % acc)
"""
CH7_MODELS = (
    "model = Seq2seq(vocab_size, wordvec_size, hidden_size)\n"
    "# model = PeekySeq2seq(vocab_size, wordvec_size, hidden_size)"
)
CH8_MODELS = (
    "model = AttentionSeq2seq(vocab_size, wordvec_size, hidden_size)\n"
    "# model = Seq2seq(vocab_size, wordvec_size, hidden_size)\n"
    "# model = PeekySeq2seq(vocab_size, wordvec_size, hidden_size)"
)

FAKE_SEQUENCE = """\
import os
from npgated.data import sequence as _s
_vocab = {}
def load_data(file_name='addition.txt', seed=1984):
    d = _s.load_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), file_name))
    _vocab['v'] = (d.char_to_id, d.id_to_char)
    return (d.x_train, d.t_train), (d.x_test, d.t_test)
def get_vocab():
    return _vocab['v']
"""
FAKE_UTIL = """\
def eval_seq2seq(model, question, correct, id_to_char, verbose=False, is_reverse=False):
    correct = correct.flatten()
    guess = model.generate(question, int(correct[0]), len(correct) - 1)
    return int(list(guess) == [int(c) for c in correct[1:]])
"""
FAKE_MODEL = """\
from npgated.interop.book_seq2seq import model_from_book
class AttentionSeq2seq:
    def __init__(self, V, D, H):
        self.V = V
    def load_params(self, path):
        self.model = model_from_book(path, vocab_size=self.V)
    def generate(self, xs, start_id, length):
        return self.model.generate(xs, start_id, length)[0]
"""
FAST = dict(wait_quiet=0.0, sample_s=0.05, timeout=300.0)


@pytest.fixture(scope="module")
def fake_book(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("_npgated_conftest", HERE / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    book = tmp_path_factory.mktemp("seq2seq_bench") / "book"
    conftest.write_synthetic_book_tasks(book / "dataset", n_lines=400)
    # ch08/train.py reverses unconditionally: it has no is_reverse line to edit
    for rel, text in (
        (
            "ch07/train_seq2seq.py",
            FAKE_TRAIN.format(reverse="is_reverse = False  # True", models=CH7_MODELS),
        ),
        ("ch08/train.py", FAKE_TRAIN.format(reverse="is_reverse = True", models=CH8_MODELS)),
        ("dataset/sequence.py", FAKE_SEQUENCE),
        ("dataset/__init__.py", ""),
        ("common/util.py", FAKE_UTIL),
        ("common/__init__.py", ""),
        ("ch08/attention_seq2seq.py", FAKE_MODEL),
    ):
        (book / rel).parent.mkdir(parents=True, exist_ok=True)
        (book / rel).write_text(text)
    V = sequence.load_task("date", book / "dataset").vocab_size
    model_to_book(AttentionSeq2seq(V, 4, 8, seed=0), book / "ch08" / "AttentionSeq2seq.pkl")
    return book


def test_both_trainings_timed_per_epoch_with_the_edits_applied(fake_book, benchmarks):
    bench = benchmarks("seq2seq")
    logged = []
    result = bench.run_training(fake_book, "addition-peeky", epochs=2, log=logged.append, **FAST)
    assert "error" not in result, result.get("error")
    book, npg = result["book"], result["npgated"]
    # reversed (+0.1) and peeky (+0.01): both edits reached the script; max_epoch 25 -> 2
    assert [round(100 * e["accuracy"], 3) for e in book["epochs"]] == [1.11, 2.11]
    assert len(npg["epochs"]) == 2 and all(0 <= e["accuracy"] <= 1 for e in npg["epochs"])
    for side in (book, npg):
        assert all(e["train_s"] > 0 and e["eval_s"] >= 0 for e in side["epochs"])
        assert side["median_train_s"] == side["epochs"][1]["train_s"]  # epochs 2.. only
    assert "book-addition-peeky" in npg["argv"] and "--epochs" in npg["argv"]
    assert result["ratios"]["train"] == pytest.approx(
        book["median_train_s"] / npg["median_train_s"]
    )

    report = dict(
        date="2026-12-04T00:00:00+00:00",
        machine={"cpu_model": "cpu", "cores": 2},
        python_version="3",
        threads=2,
        note="noisy",
        command="x",
        training=[result],
        eval=None,
    )
    table = bench.markdown(report)
    assert "| ch. 7 addition, PeekySeq2seq, reversed | 2 |" in table and "**noisy**" in table


def test_an_edit_that_matches_nothing_is_an_error(fake_book, benchmarks):
    bench = benchmarks("seq2seq")
    # ch08's fake script has no "is_reverse = False" line: a reversed ch08 experiment fails
    bench.EXPERIMENTS["broken"] = (bench.CH8, [bench._REVERSE], ["--preset", "book-addition"])
    bench.TITLES["broken"] = "broken"
    result = bench.run_training(fake_book, "broken", epochs=1, log=lambda _: None, **FAST)
    assert "matched 0 lines" in result["error"] and "ratios" not in result


def test_evaluation_counts_must_agree(fake_book, benchmarks):
    bench = benchmarks("seq2seq")
    result = bench.run_eval(fake_book, repeats=2, log=lambda _: None, **FAST)
    assert "error" not in result, result.get("error")
    book, npg = result["commands"]["book"], result["commands"]["npgated"]
    assert book["counts"] == npg["counts"] and book["counts"][0][1] == 40
    assert npg["counts"][0][0] < 40  # an untrained model: the wrong book side below differs
    assert len(book["seconds"]) == 2 and result["ratio"] == pytest.approx(
        book["median_s"] / npg["median_s"]
    )
    # a book side that counts differently: refused, no speed
    wrong = FAKE_UTIL + "    return 1\n"  # every answer counted
    wrong = wrong.replace("    return int(", "    int(")
    (fake_book / "common" / "util.py").write_text(wrong)
    try:
        result = bench.run_eval(fake_book, repeats=1, log=lambda _: None, **FAST)
    finally:
        (fake_book / "common" / "util.py").write_text(FAKE_UTIL)
    assert "refused" in result["error"] and "ratio" not in result


def test_arguments(tmp_path, benchmarks, monkeypatch):
    monkeypatch.delenv("NPGATED_BOOK_DIR", raising=False)
    bench = benchmarks("seq2seq")
    with pytest.raises(SystemExit):
        bench.parse_args([])
    with pytest.raises(SystemExit):
        bench.parse_args(["--book-dir", str(tmp_path), "--experiments", "nope"])
    args = bench.parse_args(["--book-dir", str(tmp_path), "--experiments", "none"])
    assert args.names == []
    assert bench.main(["--book-dir", str(tmp_path / "nowhere")]) == 2
