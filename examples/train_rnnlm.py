"""Train the book's chapter-6 language model (Rnnlm: one LSTM layer, 100/100) on PTB.

    python examples/train_rnnlm.py            # ~4 epochs; test perplexity ~136 in the book

The same run from the command line: ``npgated train --preset book-small``. This script shows
the pieces instead: config, data, model, optimizer, the loop, evaluation.
"""

import logging

from npgated.training.config import preset
from npgated.training.loop import load_corpora, train

logging.basicConfig(level=logging.INFO, format="%(message)s")

config = preset("book-small", run_dir="runs/book-small")
train_corpus, valid, test, word_to_id, id_to_word = load_corpora(config)
result = train(config, (train_corpus, valid, test, word_to_id))
print(f"best valid perplexity {result.best_val_ppl:.2f}, test perplexity {result.test_ppl:.2f}")
