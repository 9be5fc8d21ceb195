"""Checkpoints: ``.npz`` arrays + JSON metadata, written atomically, never with a NaN.

Layout of one checkpoint file (a plain ``numpy.savez`` archive, no pickles)::

    params/<name>          every unique model parameter, by dotted name ("lstm1.Wx")
    optim/<name>/<slot>    optimizer state per parameter ("optim/lstm1.Wx/m")
    __meta__               UTF-8 JSON as a uint8 array: format, npgated version, model
                           config, vocabulary checksum, epoch, iteration, learning rate,
                           RNG states, best validation perplexity, optimizer hyperparameters

Saving writes to a temporary file in the same directory, flushes it to disk and
``os.replace``-s it over the target: a crash or kill mid-way leaves the previous checkpoint
intact (rename is atomic on POSIX and Windows). Saving refuses non-finite arrays, so a
diverged run never overwrites good weights. Loading uses ``allow_pickle=False`` and checks
the archive name by name and shape by shape, with errors that say what differs.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npgated import __version__, backend
from npgated.io import atomic_write  # re-exported: it lived here before npgated.io

FORMAT = "npgated-checkpoint-1"
_META = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint cannot be written or does not fit what it is loaded into."""


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, all on the host."""

    params: dict[str, np.ndarray]
    meta: dict
    optim_slots: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _to_jsonable(obj):
    """Make RNG states and NumPy scalars JSON-serialisable."""
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def save_checkpoint(
    path, model, optimizer=None, meta: dict | None = None, extra: dict | None = None
) -> Path:
    """Write ``model`` (and ``optimizer`` state) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Target ``.npz`` file; its directory is created if needed.
    model : Model
        Anything with ``named_params()`` and a ``config`` dict.
    optimizer : optional
        Anything with ``state_dict()`` returning ``{"name", "hyper", "t", "slots"}``.
    meta : dict
        Extra JSON-serialisable metadata (epoch, iteration, lr, rng states, ...).
    extra : dict of arrays
        Other arrays to keep (the recurrent state carried to the next window), stored as
        ``extra/<name>``.

    Raises
    ------
    CheckpointError
        If any array is not finite (nothing is written then).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    names = []
    for name, p, _ in model.named_params():
        arrays[f"params/{name}"] = backend.to_cpu(p)
        names.append(name)
    info = dict(meta or {})
    info.update(
        format=FORMAT,
        npgated_version=__version__,
        config=getattr(model, "config", {}),
        param_names=names,
    )
    if optimizer is not None:
        state = optimizer.state_dict()
        info["optimizer"] = {k: v for k, v in state.items() if k != "slots"}
        for slot, values in state["slots"].items():
            if len(values) != len(names):
                raise CheckpointError(
                    f"optimizer slot {slot!r} has {len(values)} arrays for {len(names)} parameters"
                )
            for name, value in zip(names, values):
                arrays[f"optim/{name}/{slot}"] = backend.to_cpu(value)
    for name, value in (extra or {}).items():
        arrays[f"extra/{name}"] = backend.to_cpu(value)
    bad = [k for k, a in arrays.items() if not np.all(np.isfinite(a))]
    if bad:
        raise CheckpointError(
            f"refusing to save a checkpoint with non-finite values in {', '.join(bad)}; "
            "the previous checkpoint (if any) is kept"
        )
    blob = json.dumps(_to_jsonable(info)).encode("utf-8")
    arrays[_META] = np.frombuffer(blob, dtype=np.uint8)

    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint (no pickles). Raises CheckpointError for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{path} is not a readable npgated checkpoint (truncated or corrupted?): {exc}"
        ) from None
    if _META not in files:
        raise CheckpointError(f"{path} has no {_META} entry: not an npgated checkpoint")
    try:
        meta = json.loads(files.pop(_META).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: metadata is corrupted ({exc})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: format {meta.get('format')!r} is not {FORMAT!r} (written by another "
            "program or an incompatible npgated version)"
        )
    params, slots, extra = {}, {}, {}
    for key, value in files.items():
        kind, _, rest = key.partition("/")
        if kind == "params":
            params[rest] = value
        elif kind == "optim":
            name, _, slot = rest.rpartition("/")
            slots.setdefault(name, {})[slot] = value
        elif kind == "extra":
            extra[rest] = value
    listed = meta.get("param_names", [])
    if sorted(listed) != sorted(params):
        raise CheckpointError(
            f"{path}: the arrays stored ({sorted(params)}) differ from the names listed in "
            f"the metadata ({sorted(listed)}): the file is damaged"
        )
    return Checkpoint(params=params, meta=meta, optim_slots=slots, extra=extra)


def _constructor_defaults(model) -> dict:
    """``{argument: default}`` of ``type(model).__init__`` (empty if it has none)."""
    try:
        parameters = inspect.signature(type(model).__init__).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def restore(model, ckpt: Checkpoint, optimizer=None, vocab_checksum: str | None = None) -> dict:
    """Load ``ckpt`` into ``model`` (and ``optimizer``), checking that they match.

    Checks, in order: the vocabulary checksum (if given), the model configuration, then the
    parameters name by name and shape by shape. Returns the metadata. A configuration key
    the checkpoint lacks (an option newer than the file) matches the model's constructor
    default, so checkpoints written before an option existed still load.
    """
    meta = ckpt.meta
    if vocab_checksum is not None and meta.get("vocab_checksum") not in (None, vocab_checksum):
        raise CheckpointError(
            "the checkpoint was trained with a different vocabulary (checksum "
            f"{meta.get('vocab_checksum', '?')[:12]}… vs this data's {vocab_checksum[:12]}…)"
        )
    config = getattr(model, "config", None)
    saved = meta.get("config")
    if config is not None and saved is not None:
        # options added after a checkpoint was written are absent from its config: they
        # match when the model has them at the constructor's default (the old behaviour)
        defaults = _constructor_defaults(model)
        saved = {**{k: defaults[k] for k in config if k not in saved and k in defaults}, **saved}
        diffs = [
            f"{k}: checkpoint {saved.get(k)!r} vs model {config.get(k)!r}"
            for k in sorted(set(config) | set(saved))
            if _to_jsonable(saved.get(k)) != _to_jsonable(config.get(k))
        ]
        if diffs:
            raise CheckpointError("the checkpoint is for a different model: " + "; ".join(diffs))
    try:
        model.load_params(ckpt.params)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint does not fit the model: {exc}") from None
    if optimizer is not None and "optimizer" in meta:
        names = model.param_names
        state = dict(meta["optimizer"])
        slot_names = sorted({s for d in ckpt.optim_slots.values() for s in d})
        missing = [n for n in names if slot_names and n not in ckpt.optim_slots]
        if missing:
            raise CheckpointError(f"optimizer state is missing for parameters {missing}")
        state["slots"] = {s: [ckpt.optim_slots[n][s] for n in names] for s in slot_names}
        optimizer.load_state_dict(state)
    return meta
