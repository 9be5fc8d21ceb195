"""Was this process started by an MPI launcher? Read from the environment, importing nothing.

``mpiexec``/``mpirun``/``srun`` give every rank variables naming its rank (and usually the
number of ranks). Looking for them costs microseconds, so the CLI asks here first and
imports :mod:`npgated.distributed` (MPI, the training loop) only when they are present: a
plain ``npgated eval`` or ``generate`` loads none of it.
"""

from __future__ import annotations

import os

__all__ = ["LAUNCHER_VARS", "launcher_env"]

# (rank variable, world-size variable or None) set by common launchers: MPICH/Intel MPI
# (Hydra), Open MPI, PMIx-based launchers, MVAPICH2; Intel MPI's local rank alone (its
# MPI_LOCALNRANKS counts the ranks on this machine, not the run's).
LAUNCHER_VARS = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMIX_RANK", None),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
    ("MPI_LOCALRANKID", None),
)


def launcher_env(environ=None) -> dict:
    """``{variable: value}`` of the MPI launcher variables present (empty: not launched)."""
    environ = os.environ if environ is None else environ
    return {v: environ[v] for pair in LAUNCHER_VARS for v in pair if v and v in environ}
