"""``npgated.cli.main`` with a fault injected on one rank, for tests/test_distributed.py.

Usage (under ``mpiexec -n K``)::

    python cli_with_fault.py RANK STEP FAULT -- <npgated arguments>

After its STEP-th training step, rank RANK alone either sends itself SIGINT (FAULT
``sigint``: the run must stop on every rank with a resumable checkpoint) or raises
(FAULT ``raise``: every rank must end, none left waiting in a collective).
"""

import os
import signal
import sys

from npgated import cli, distributed


def main():
    rank, step, fault = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    assert sys.argv[4] == "--" and fault in ("sigint", "raise"), sys.argv
    original = distributed.DataParallel.gradients
    done = {"steps": 0}

    def gradients(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        done["steps"] += 1
        if self.rank == rank and done["steps"] == step:
            if fault == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise RuntimeError(f"injected failure on rank {rank} after step {step}")
        return result

    distributed.DataParallel.gradients = gradients
    return cli.main(sys.argv[5:])


if __name__ == "__main__":
    sys.exit(main())
