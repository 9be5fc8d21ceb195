"""Files written all or nothing: the one helper the data, training and interop modules share.

It lives at the bottom of the package (it imports nothing from npgated), so that a data module
can write its cache without importing the training package that sits above it.
:func:`npgated.training.checkpoint.atomic_write` is this function, re-exported.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path, write) -> Path:
    """Write a file all or nothing: ``write(f)`` fills a temporary file beside ``path``, which
    is synced and then renamed over ``path`` (``os.replace``); on any error it is removed and
    ``path`` keeps its previous content. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
