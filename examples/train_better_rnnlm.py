"""Train the book's improved model (BetterRnnlm: 2 x 650 LSTM, dropout 0.5, tied) on PTB.

    python examples/train_better_rnnlm.py                 # 40 epochs: hours on a CPU
    python examples/train_better_rnnlm.py --epochs 2      # a shorter look

Equivalent to ``npgated train --preset book-better``; every hyperparameter can be changed
the same way here (see ``npgated train --help``).
"""

import argparse
import logging

from npgated.training.config import preset
from npgated.training.loop import load_corpora, train

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--epochs", type=int, default=40)
parser.add_argument("--cell", default="lstm", choices=("lstm", "gru"))
parser.add_argument("--run-dir", default="runs/book-better")
args = parser.parse_args()

logging.basicConfig(level=logging.INFO, format="%(message)s")
config = preset("book-better", epochs=args.epochs, cell=args.cell, run_dir=args.run_dir)
train_corpus, valid, test, word_to_id, _ = load_corpora(config)
result = train(config, (train_corpus, valid, test, word_to_id))
print(f"best valid perplexity {result.best_val_ppl:.2f}, test perplexity {result.test_ppl:.2f}")
