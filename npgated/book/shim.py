"""Run the book's scripts unchanged with npgated's layers: a folder to put first on PYTHONPATH.

The book's model files import their layers with ``from common.time_layers import *`` (and
chapter 8's ``from ch08.attention_layer import TimeAttention``). :func:`write_shim` writes a
small folder that answers those two imports with :mod:`npgated.book` and everything else
(``common.trainer``, ``common.optimizer``, ``common.util``, ``common.np``, ...) with the
book's own modules, so no file of the book's checkout is edited::

    python -m npgated.book.shim /tmp/npgated-shim          # prints the folder
    cd BOOK/ch06 && PYTHONPATH=/tmp/npgated-shim python train_rnnlm.py

What it writes:

``common/__init__.py``
    A package ``common`` whose search path is this folder first, then the book's
    ``common/`` folder, found on ``sys.path`` when the package is imported (the book's
    scripts append ``..`` to ``sys.path`` before their first ``common`` import; a book root
    on ``PYTHONPATH`` works too).
``common/time_layers.py``
    The book's module namespace: the book's ``common.layers`` names (``Softmax``,
    ``MatMul``, ... and ``np``), then npgated's layers under the book's names
    (:mod:`npgated.book.time_layers`), then the book's ``np`` again, so the book's own
    switch (``common/config.py``, ``GPU``) picks NumPy or CuPy for the model file's arrays.
``ch08/attention_layer.py``
    The attention layers of :mod:`npgated.book.attention_layer` (a namespace-package
    portion: ``ch08``'s other modules stay the book's).

The generated modules use star-imports because the book's model files read the names of
a star-import; npgated's own code has none.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main", "write_shim"]

_COMMON_INIT = '''\
"""The book's `common` package with npgated's time layers (written by npgated.book.shim)."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    _candidate = os.path.join(os.path.abspath(_entry or os.curdir), "common")
    if (os.path.abspath(_candidate) != _here
            and os.path.isfile(os.path.join(_candidate, "time_layers.py"))):
        __path__.append(_candidate)  # the book's common/: trainer, optimizer, util, np, ...
        break
else:
    raise ImportError(
        "npgated.book.shim: the book's common/ folder is not on sys.path; run the book's "
        "script from its chapter folder (it appends '..' to sys.path) or put the book's root "
        "on PYTHONPATH after the shim")
'''

_TIME_LAYERS = '''\
"""The book's common.time_layers namespace, its layers computed by npgated (npgated.book.shim)."""
from common.layers import *  # noqa: F401,F403  the book's other layers (Softmax, MatMul, ...)
from common.functions import sigmoid, softmax  # noqa: F401
from npgated.book.time_layers import *  # noqa: F401,F403  npgated's layers, the book's names
from common.np import *  # noqa: F401,F403  the book's np (its GPU switch) for the model files
'''

_ATTENTION = '''\
"""The book's ch08.attention_layer, computed by npgated (written by npgated.book.shim)."""
from npgated.book.attention_layer import *  # noqa: F401,F403
from common.np import *  # noqa: F401,F403  the book's np (its GPU switch)
'''


def write_shim(folder) -> Path:
    """Write the shim into ``folder`` (created if needed) and return its absolute path.

    Parameters
    ----------
    folder : str or Path
        Put it first on ``PYTHONPATH`` when running a book script (see the module docstring).

    Returns
    -------
    Path
    """
    folder = Path(folder).resolve()
    files = {
        folder / "common" / "__init__.py": _COMMON_INIT,
        folder / "common" / "time_layers.py": _TIME_LAYERS,
        folder / "ch08" / "attention_layer.py": _ATTENTION,
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def main(argv=None) -> int:
    """``python -m npgated.book.shim FOLDER``: write the shim, print the folder."""
    parser = argparse.ArgumentParser(
        prog="python -m npgated.book.shim",
        description="Write a folder that, first on PYTHONPATH, runs the book's scripts "
        "unchanged on npgated's layers (npgated.book).",
    )
    parser.add_argument("folder", help="where to write it (created if needed)")
    args = parser.parse_args(argv)
    try:
        folder = write_shim(args.folder)
    except OSError as exc:
        print(
            f"npgated.book.shim: cannot write {args.folder}: {exc.strerror or exc}", file=sys.stderr
        )
        return 2
    print(os.fspath(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
