"""Read dates in any format with the book's trained attention model, and see where it looks.

    python examples/seq2seq_date_attention.py                       # the book's weights
    python examples/seq2seq_date_attention.py --question "7/4/76" --out att.png

Loads the book's chapter-8 ``AttentionSeq2seq.pkl`` (``--pkl``, else ``AttentionSeq2seq.pkl``
in the folder of the book's ``date.txt``: ``--data-dir``, else ``$NPGATED_BOOK_DATA_DIR``, else
``book/`` beside ``$NPGATED_DATA_DIR``), answers a few dates written in different ways, all in
one batch (greedy decoding, then beam search), scores the first ``--n-test`` test questions the
book's way (an answer counts only if every character matches), and draws the attention map of
the first question (``--out``): each output character's weights over the input characters.

Without the book's files it trains a small AttentionSeq2seq (H = 64) for ``--iters`` iterations
on dates it writes itself in three formats (the loop of ``npgated train``: zero the gradients,
forward, backward, clip, Adam). The default 600 iterations (about 8 s of CPU time here) get
about a fifth of its test dates right, and the map already shows output digits attending to the
input digits they copy; the book's model, trained for 10 epochs, gets all of them.
``npgated import-book``, ``generate`` and ``attention`` do the same from the command line.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from npgated.analysis.attention_map import attention_weights, plot_attention
from npgated.data import sequence
from npgated.interop.book_seq2seq import model_from_book
from npgated.models.seq2seq import AttentionSeq2seq, seq2seq_accuracy
from npgated.optim import make_optimizer
from npgated.optim.clip import clip_grads

MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


def synthetic_dates(folder: Path, n: int = 5000, seed: int = 0) -> Path:
    """Random dates in three formats, in the book's line format (29 + 1 + 10 characters)."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        y, m, d = int(rng.integers(1950, 2050)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
        q = (
            f"{MONTHS[m - 1]} {d}, {y}",
            f"{m}/{d}/{y % 100:02d}",
            f"{d} {MONTHS[m - 1][:3].upper()} {y}",
        )[int(rng.integers(3))]
        lines.append(q.ljust(29) + "_" + f"{y}-{m:02d}-{d:02d}\n")
    path = folder / "date.txt"
    path.write_text("".join(lines))
    return path


def train_small(data, iters: int, seed: int = 0) -> AttentionSeq2seq:
    model = AttentionSeq2seq(data.vocab_size, 16, 64, seed=seed)
    optimizer = make_optimizer("adam", 0.005)
    rng = np.random.default_rng(seed)
    for it in range(1, iters + 1):
        rows = rng.integers(0, len(data.x_train), 64)
        model.zero_grads()
        loss = float(model.forward(data.x_train[rows], data.t_train[rows]))
        model.backward()
        clip_grads(model.grads, 5.0)
        optimizer.update(model.params, model.grads)
        if it % max(1, iters // 4) == 0:
            print(f"iteration {it:5d}  loss {loss:.3f}")
    return model.eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with the book's date.txt")
    parser.add_argument("--pkl", default=None, help="the book's AttentionSeq2seq.pkl")
    parser.add_argument(
        "--question", action="append", default=None, help="a date to read (repeat for several)"
    )
    parser.add_argument("--n-test", type=int, default=1000, help="test questions to score")
    parser.add_argument(
        "--iters",
        type=int,
        default=600,
        help="training iterations when the book's files are absent",
    )
    parser.add_argument("--out", default="attention_date.png", help="the attention map")
    args = parser.parse_args()
    questions = args.question or ["september 27, 1994", "2/10/93", "Tuesday, March 4, 2025"]

    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = sequence.load_task("date", args.data_dir, reverse=True)
            folder = sequence.resolve_data_dir(args.data_dir)
            pkl = Path(args.pkl) if args.pkl else folder / "AttentionSeq2seq.pkl"
        except FileNotFoundError as exc:
            print(f"({exc}; using dates written here instead)")
            data = sequence.load_file(synthetic_dates(Path(tmp)), reverse=True, task="date")
            pkl = Path(args.pkl) if args.pkl else None
        if pkl is not None and pkl.is_file():
            model = model_from_book(pkl, vocab_size=data.vocab_size)
            print(f"the book's trained model from {pkl}")
        else:
            print(f"no trained model found: training a small one for {args.iters} iterations")
            model = train_small(data, args.iters)

    # every question in one batch, padded and reversed as the model reads them
    xs = sequence.encode_questions(questions, data.char_to_id, data.question_width, reverse=True)
    greedy = sequence.decode(model.generate(xs, data.start_id, data.answer_width), data.id_to_char)
    beam = sequence.decode(
        model.generate(xs, data.start_id, data.answer_width, beam_size=3), data.id_to_char
    )
    for q, g, b in zip(questions, greedy, beam):
        print(f"{q:<29} -> {g}   (beam of 3: {b})")

    n = min(args.n_test, len(data.x_test))
    correct, total = seq2seq_accuracy(model, data.x_test[:n], data.t_test[:n])
    print(f"test accuracy {100 * correct / total:.2f} % ({correct} of {total})")

    ts = sequence.encode(sequence.START + greedy[0], data.char_to_id)  # start symbol + answer
    weights = attention_weights(model, xs[:1], ts, reverse=True)
    path = plot_attention(weights, questions[0].ljust(data.question_width), greedy[0], args.out)
    print(f"attention map written to {path}")


if __name__ == "__main__":
    main()
