#!/usr/bin/env python
"""One child of ``book_dropin.py``: the book's training loop on the book's model file, timed.

Run by ``book_dropin.py`` from a copy in a temporary folder (so that this folder, not
``benchmarks/``, is the script's folder on ``sys.path``: the book's chapter modules have
names -- ``seq2seq``, ``train`` -- that files elsewhere may have too), with ``PYTHONPATH`` =
[the shim (npgated's layers) or nothing (the book's)], npgated's checkout, the book's root,
the book's chapter folder. Nothing here imports npgated's layers: which layers the book's
model file gets is decided by ``PYTHONPATH`` alone.

Chapters (the book's scripts' hyperparameters; the loop is theirs, cut at ``--max-iters``):

``ch06``  ``train_rnnlm.py``: ``Rnnlm(V, 100, 100)``, SGD lr 20, clip 0.25, batch 20 x 35
          (the book's ``RnnlmTrainer.get_batch``), PTB train from ``--data-dir`` (read with
          npgated's loader, whose ids are the book's); ``np.random.seed(--seed)`` first (the
          book's script sets none, so the two children need one to start alike).
``ch07``  ``train_seq2seq.py``: ``Seq2seq(V, 16, 128)`` on ``addition.txt``, Adam, clip 5,
          batch 128, a ``numpy.random.permutation`` per epoch as the book's ``Trainer.fit``.
``ch08``  ``train.py``: ``AttentionSeq2seq(V, 16, 256)`` on ``date.txt``, questions
          reversed, Adam, clip 5, batch 128.

For ch07 and ch08 the global ``np.random`` state is the one the book's ``sequence.load_data``
leaves (it seeds 1984 and shuffles), as in the book's scripts: the models start from the
book's own initial weights. ``--eval-questions K`` then scores the first K test questions
with the book's ``eval_seq2seq`` (one question at a time, as its scripts do).

Each iteration is timed in two parts: the batch (the book's batching code, the same for both
children) and the step (forward, backward, ``remove_duplicate``, ``clip_grads``, update;
with CuPy the device is synchronised before the clock is read). The result is one JSON line
on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _sync_for(np_module):
    """A function that waits for the device (CuPy) or does nothing (NumPy)."""
    cuda = getattr(np_module, "cuda", None)
    if cuda is None:
        return lambda: None
    return cuda.Stream.null.synchronize


def _step(model, optimizer, remove_duplicate, clip_grads, max_grad, bx, bt):
    loss = model.forward(bx, bt)
    model.backward()
    params, grads = remove_duplicate(model.params, model.grads)
    clip_grads(grads, max_grad)
    optimizer.update(params, grads)
    return float(loss)


def run_ch06(args, out):
    import numpy  # noqa: PLC0415  (after the book's GPU switch)
    from common.optimizer import SGD  # noqa: PLC0415
    from common.trainer import RnnlmTrainer, remove_duplicate  # noqa: PLC0415
    from common.util import clip_grads  # noqa: PLC0415
    from rnnlm import Rnnlm  # noqa: PLC0415

    from npgated.data import ptb  # noqa: PLC0415  (the book's ids; no download, no cache write)

    corpus, word_to_id, _ = ptb.load_data("train", args.data_dir, cache=False)
    xs, ts = corpus[:-1], corpus[1:]
    batch_size, time_size, lr, max_grad = 20, 35, 20.0, 0.25
    numpy.random.seed(args.seed)
    model = Rnnlm(len(word_to_id), 100, 100)
    optimizer = SGD(lr)
    trainer = RnnlmTrainer(model, optimizer)
    trainer.time_idx = 0
    sync = _sync_for(sys.modules["common.np"].np)
    out["layers_module"] = type(model.layers[1]).__module__
    out["hyper"] = dict(
        vocab=len(word_to_id),
        wordvec=100,
        hidden=100,
        batch=batch_size,
        time=time_size,
        lr=lr,
        max_grad=max_grad,
        seed=args.seed,
    )
    per_epoch = len(xs) // (batch_size * time_size)
    out["iters_per_epoch"] = per_epoch
    for _ in range(args.max_iters):
        t0 = time.perf_counter()
        bx, bt = trainer.get_batch(xs, ts, batch_size, time_size)
        sync()
        t1 = time.perf_counter()
        loss = _step(model, optimizer, remove_duplicate, clip_grads, max_grad, bx, bt)
        sync()
        t2 = time.perf_counter()
        out["losses"].append(loss)
        out["batch_s"].append(t1 - t0)
        out["step_s"].append(t2 - t1)


def run_seq2seq(args, out):
    import numpy  # noqa: PLC0415
    from common.optimizer import Adam  # noqa: PLC0415
    from common.trainer import remove_duplicate  # noqa: PLC0415
    from common.util import clip_grads, eval_seq2seq  # noqa: PLC0415
    from dataset import sequence  # noqa: PLC0415

    ch07 = args.chapter == "ch07"
    (x_train, t_train), (x_test, t_test) = sequence.load_data(
        "addition.txt" if ch07 else "date.txt"
    )
    _, id_to_char = sequence.get_vocab()
    reverse = not ch07  # ch08/train.py reverses the questions; ch07's default does not
    if reverse:
        x_train, x_test = x_train[:, ::-1], x_test[:, ::-1]
    V, D, H = len(id_to_char), 16, 128 if ch07 else 256
    if ch07:
        from seq2seq import Seq2seq as Model  # noqa: PLC0415
    else:
        from attention_seq2seq import AttentionSeq2seq as Model  # noqa: PLC0415
    if args.seed is not None:
        numpy.random.seed(args.seed)
    model = Model(V, D, H)
    optimizer = Adam()
    batch_size, max_grad = 128, 5.0
    sync = _sync_for(sys.modules["common.np"].np)
    out["layers_module"] = type(model.encoder.lstm).__module__
    if not ch07:
        out["attention_module"] = type(model.decoder.attention).__module__
    out["hyper"] = dict(
        vocab=V,
        wordvec=D,
        hidden=H,
        batch=batch_size,
        optimizer="Adam",
        max_grad=max_grad,
        reverse=reverse,
        seed=args.seed,
    )
    per_epoch = len(x_train) // batch_size
    out["iters_per_epoch"] = per_epoch
    it = 0
    while it < args.max_iters:
        idx = numpy.random.permutation(numpy.arange(len(x_train)))  # the book's Trainer.fit
        x, t = x_train[idx], t_train[idx]
        for k in range(per_epoch):
            if it >= args.max_iters:
                break
            t0 = time.perf_counter()
            bx = x[k * batch_size : (k + 1) * batch_size]
            bt = t[k * batch_size : (k + 1) * batch_size]
            t1 = time.perf_counter()
            loss = _step(model, optimizer, remove_duplicate, clip_grads, max_grad, bx, bt)
            sync()
            t2 = time.perf_counter()
            out["losses"].append(loss)
            out["batch_s"].append(t1 - t0)
            out["step_s"].append(t2 - t1)
            it += 1
    if args.eval_questions:
        K = min(args.eval_questions, len(x_test))
        t0 = time.perf_counter()
        correct = 0
        for i in range(K):
            correct += eval_seq2seq(model, x_test[[i]], t_test[[i]], id_to_char, False, reverse)
        sync()
        out["eval"] = {"questions": K, "correct": int(correct), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chapter", choices=("ch06", "ch07", "ch08"), required=True)
    p.add_argument("--max-iters", type=int, required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data-dir", default=None, help="PTB (ch06)")
    p.add_argument("--eval-questions", type=int, default=0)
    p.add_argument(
        "--gpu",
        action="store_true",
        help="the book's own switch, common.config.GPU = True (CuPy), set here "
        "before the book's modules read it; the book's files are not edited",
    )
    args = p.parse_args(argv)
    if args.gpu:
        import common.config  # noqa: PLC0415

        common.config.GPU = True
    out = {
        "chapter": args.chapter,
        "max_iters": args.max_iters,
        "gpu": args.gpu,
        "losses": [],
        "batch_s": [],
        "step_s": [],
    }
    t0 = time.perf_counter()
    if args.chapter == "ch06":
        if args.seed is None:
            args.seed = 1984
        run_ch06(args, out)
    else:
        run_seq2seq(args, out)
    out["total_s"] = time.perf_counter() - t0
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
