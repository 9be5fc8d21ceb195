"""Sample text from a trained language model (the book's generate_text.py).

    python examples/generate_text.py runs/book-small --start "you" --length 100

The checkpoint (a run directory or a .npz file) is loaded with its vocabulary check; words are
sampled one at a time with the model's state carried between them, never ``<unk>`` or ``N``.
"""

import argparse

from npgated.data import ptb
from npgated.models.rnnlm import build_model
from npgated.training.checkpoint import load_checkpoint, restore

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("checkpoint", help="run directory (uses best.npz) or .npz file")
parser.add_argument("--start", default="you")
parser.add_argument("--length", type=int, default=100)
parser.add_argument("--temperature", type=float, default=1.0)
parser.add_argument("--top-k", type=int, default=None)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

path = args.checkpoint
if not path.endswith(".npz"):
    path = f"{path}/best.npz"
ckpt = load_checkpoint(path)
_, word_to_id, id_to_word = ptb.load_data("train")
model = build_model(ckpt.meta["config"], dtype=next(iter(ckpt.params.values())).dtype)
restore(model, ckpt, vocab_checksum=ptb.vocab_checksum(word_to_id))

start_ids = ptb.words_to_ids(args.start.split(), word_to_id)
skip_ids = [word_to_id[w] for w in ("<unk>", "N") if w in word_to_id]
ids = model.generate(
    start_ids,
    args.length,
    temperature=args.temperature,
    top_k=args.top_k,
    skip_ids=skip_ids,
    seed=args.seed,
)
print(" ".join(ptb.ids_to_words(ids, id_to_word)).replace(" <eos>", ".\n"))
