"""One flat buffer for the parameters, and the recurrent stack pipelined over two threads.

    python examples/flat_and_pipeline.py            # a small 2-layer model, a few steps
    python examples/flat_and_pipeline.py --hidden 650 --steps 5 --vocab 10000

Trains the same BetterRnnlm (same seed, same batches, SGD with clipping) four ways -- flat
buffers on/off x pipeline on/off, npgated's threads on -- prints the milliseconds per step of
each, and checks that all four end with the same parameters (float64 by default, so to
rounding). The timings are whatever this machine gives at the moment: the benchmark in
docs/speed.md is where speed is measured.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from npgated import parallel, pipeline
from npgated.models.rnnlm import BetterRnnlm
from npgated.optim import SGD, clip_grads


def train(flat: bool, pipelined: bool, args) -> tuple[list, float]:
    """The parameters after ``args.steps`` steps, and the milliseconds per step."""
    os.environ[pipeline.ENV_VAR] = "1" if pipelined else "0"
    model = BetterRnnlm(
        args.vocab,
        args.hidden,
        args.hidden,
        num_layers=2,
        dropout_ratio=0.3,
        seed=0,
        dtype=np.dtype(args.dtype),
        flat=flat,
    )
    optimizer = SGD(lr=1.0)
    rng = np.random.default_rng(0)
    tic = time.perf_counter()
    for _ in range(args.steps):
        xs, ts = rng.integers(0, args.vocab, (20, 35)), rng.integers(0, args.vocab, (20, 35))
        model.zero_grads()  # flat: one fill
        model.forward(xs, ts)  # pipelined: layer 2 on chunk k while layer 1 runs chunk k + 1
        model.backward()
        clip_grads(model.grads, 0.25)  # flat: one dot product, one scale
        optimizer.update(model.params, model.grads)  # flat: one pass over the buffers
    ms = (time.perf_counter() - tic) / args.steps * 1000
    return [p.copy() for p in model.params], ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    parallel.use_threads(2)
    results = {}
    for flat in (True, False):
        for pipelined in (False, True):
            params, ms = train(flat, pipelined, args)
            results[flat, pipelined] = params
            print(
                f"flat buffers {'on ' if flat else 'off'}, "
                f"pipeline {'on ' if pipelined else 'off'}:"
                f" {ms:7.1f} ms/step"
            )
    reference = results[False, False]
    rtol = 1e-10 if args.dtype == "float64" else 1e-3
    for key, params in results.items():
        for p, r in zip(params, reference):
            np.testing.assert_allclose(p, r, rtol=rtol, atol=rtol * 1e-3, err_msg=str(key))
    print("the same parameters all four ways: OK")


if __name__ == "__main__":
    main()
