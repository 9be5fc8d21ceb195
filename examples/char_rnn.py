"""Train a character-level RNN on a small text and sample from it (min-char-rnn, npgated's way).

    python examples/char_rnn.py                      # a generated text; ~15 s
    python examples/char_rnn.py --text input.txt --iters 5000 --start "ROMEO:"

Karpathy's min-char-rnn.py trains a vanilla RNN (H 100, T 25, Adagrad lr 0.1) on the
characters of any ``input.txt``; the ``char-small`` preset is that model. The command line does
the same with ``npgated train --corpus input.txt --level char --preset char-small`` and
``npgated generate RUN --start "ROMEO:"``; this script shows the pieces: the corpus (cut
0.9/0.05/0.05, its vocabulary the code points of the train part), the config, the loop, and
sampling with the vocabulary stored in the checkpoint.
"""

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from npgated.data.corpus import Vocabulary
from npgated.models.generation import generate
from npgated.models.rnnlm import build_model
from npgated.training.checkpoint import load_checkpoint, restore
from npgated.training.config import preset
from npgated.training.loop import load_corpora, train


def generated_text(n_lines=600, seed=0) -> str:
    """A small play: two speakers, lines from a few words (a char model learns them fast)."""
    rng = np.random.default_rng(seed)
    words = ["love", "night", "light", "sweet", "my", "the", "o", "rose", "name", "by", "any"]
    speakers = ["ROMEO:", "JULIET:"]
    return "".join(
        f"{speakers[i % 2]}\n{' '.join(rng.choice(words, size=rng.integers(3, 8)))}.\n\n"
        for i in range(n_lines)
    )


parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--text", default=None, help="a UTF-8 text file (default: a generated play)")
parser.add_argument("--iters", type=int, default=4000, help="training iterations")
parser.add_argument("--start", default="ROMEO:", help="the sample's first characters")
parser.add_argument("--length", type=int, default=200, help="characters to sample")
parser.add_argument("--run-dir", default=None, help="keep the run here (default: a temp folder)")
args = parser.parse_args()
logging.basicConfig(level=logging.INFO, format="%(message)s")

with tempfile.TemporaryDirectory() as tmp:
    text = Path(args.text) if args.text else Path(tmp) / "input.txt"
    if args.text is None:
        text.write_text(generated_text(), encoding="utf-8")
    config = preset(
        "char-small",
        corpus=str(text),
        log_interval=500,
        progress=False,
        run_dir=args.run_dir or f"{tmp}/run",
    )
    train_ids, valid, test, vocab, _ = load_corpora(config)  # memory-mapped ids, Vocabulary
    per_epoch = (len(train_ids) - 1) // (config.batch_size * config.time_size)
    config = config.replace(
        epochs=-(-args.iters // per_epoch), max_iters=min(args.iters, per_epoch)
    )
    result = train(config, (train_ids, valid, test, vocab))
    print(
        f"valid {np.log2(result.best_val_ppl):.3f} bits per character, test "
        f"{np.log2(result.test_ppl):.3f} (uniform over {len(vocab)} symbols: "
        f"{np.log2(len(vocab)):.3f})"
    )

    # sampling needs only the checkpoint: the vocabulary is in its metadata
    ckpt = load_checkpoint(Path(config.run_dir) / "best.npz")
    vocab = Vocabulary.from_dict(ckpt.meta["vocab"])
    model = build_model(ckpt.meta["config"], dtype=np.float32)
    restore(model, ckpt, vocab_checksum=vocab.checksum)
    ids = generate(model, vocab.encode(args.start), args.length, skip_ids=[vocab.unk_id], seed=0)
    print(vocab.decode(ids))
