"""Teach an encoder-decoder to add: the book's chapter-7 task in a loop on one screen.

    python examples/seq2seq_addition.py                     # Seq2seq, 400 iterations
    python examples/seq2seq_addition.py --model PeekySeq2seq --reverse --iters 3000

400 iterations (about 7 s of CPU time here) are barely one epoch: the loss falls, but only a
handful of sums come out right. The book trains 25 epochs (about 8,800 iterations), where its
peeky model on reversed questions gets most sums right.

Reads the book's ``addition.txt`` (``--data-dir``, else ``$NPGATED_BOOK_DATA_DIR``, else
``book/`` beside ``$NPGATED_DATA_DIR``); without it, it writes a small file of random sums in
the same format to a temporary folder and uses that. The loop is the book's Trainer written
out: zero the gradients, forward (mean loss of the decoder's predictions), backward, clip the
global norm, an Adam step. Then the test accuracy the book's way (greedy answers, every
character must match) and a few answers. ``npgated train --task addition`` is the same with
checkpoints, logs and plots.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from npgated.data import sequence
from npgated.models.seq2seq import MODELS, build_seq2seq, seq2seq_accuracy
from npgated.optim import make_optimizer
from npgated.optim.clip import clip_grads


def synthetic_addition(folder: Path, n: int = 20000, seed: int = 0) -> Path:
    """Random sums of numbers below 1000 in the book's format ("16+75  _91  ")."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, 1000, (2, n))
    lines = [f"{x}+{y}".ljust(7) + "_" + str(x + y).ljust(4) + "\n" for x, y in zip(a, b)]
    path = folder / "addition.txt"
    path.write_text("".join(lines))
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="Seq2seq")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    parser.add_argument("--reverse", action="store_true", help="feed the questions reversed")
    parser.add_argument("--iters", type=int, default=400, help="training iterations")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--wordvec-size", type=int, default=16)
    parser.add_argument("--data-dir", default=None, help="folder with the book's addition.txt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        try:
            data = sequence.load_task("addition", args.data_dir, reverse=args.reverse)
        except FileNotFoundError as exc:
            print(f"({exc}; using random sums instead)")
            data = sequence.load_file(
                synthetic_addition(Path(tmp)), reverse=args.reverse, task="addition"
            )
    print(f"{len(data.x_train):,} training questions, {data.vocab_size} characters")

    model = build_seq2seq(
        {
            "model": args.model,
            "vocab_size": data.vocab_size,
            "wordvec_size": args.wordvec_size,
            "hidden_size": args.hidden_size,
            "cell": args.cell,
        },
        seed=args.seed,
    )
    optimizer = make_optimizer("adam", 0.001)
    rng = np.random.default_rng(args.seed)
    order, at, total = rng.permutation(len(data.x_train)), 0, 0.0
    for it in range(1, args.iters + 1):
        if at + args.batch_size > len(order):  # a new epoch: a new order
            order, at = rng.permutation(len(data.x_train)), 0
        rows = order[at : at + args.batch_size]
        at += args.batch_size
        model.zero_grads()
        total += float(model.forward(data.x_train[rows], data.t_train[rows]))
        model.backward()
        clip_grads(model.grads, 5.0)
        optimizer.update(model.params, model.grads)
        if it % 100 == 0:
            print(f"iteration {it:5d} | loss {total / 100:.3f}")
            total = 0.0

    model.eval()
    x, t = data.x_test[:1000], data.t_test[:1000]
    correct, n = seq2seq_accuracy(model, x, t)
    print(f"test accuracy {100 * correct / n:.1f} % ({correct} of {n} sums right)")
    guesses = sequence.decode(
        model.generate(x[:5], data.start_id, data.answer_width), data.id_to_char
    )
    for q, a, g in zip(
        sequence.decode(x[:5], data.id_to_char),
        sequence.decode(t[:5, 1:], data.id_to_char),
        guesses,
    ):
        q = q[::-1] if data.reverse else q
        print(f"{q} = {a}  model: {g}  {'ok' if g == a else 'wrong'}")


if __name__ == "__main__":
    main()
