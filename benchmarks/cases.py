"""What is measured: a preset of npgated as one benchmark case, and the windows it runs on.

A case is (preset, cell): the model's keyword arguments, N and T of the preset, V = 10,000,
its learning rate and clipping norm, all read from ``npgated.training.config.PRESETS``
(``--smoke`` shrinks every preset to tiny sizes). Batches are real PTB windows when
``$NPGATED_DATA_DIR`` is set (train split for training, test split for evaluation), otherwise
random ids from a seeded generator; they are saved once per shape, so both implementations
see the same ids.
"""

from __future__ import annotations

from pathlib import Path

VOCAB = 10_000
ALL_PRESETS = ("book-small", "book-better", "zaremba-small")
# --smoke: every preset shrunk to this (tying keeps D == H), one iteration of everything
SMOKE = dict(vocab_size=200, size=16, batch_size=4, time_size=5, gemm_sizes=(64, 128))


def preset_spec(name: str, cell: str, smoke: bool = False) -> dict:
    """The model and training settings of one benchmark case, from npgated's presets."""
    from npgated.training.config import PRESETS  # noqa: PLC0415 (light: dataclasses only)

    if name not in PRESETS:
        raise SystemExit(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    p = PRESETS[name]
    init = p.get("init", "book")
    init = "book" if init == "book" else float(init)
    D, H, V = p["wordvec_size"], p["hidden_size"], VOCAB
    N, T = p["batch_size"], p["time_size"]
    if smoke:
        D = H = SMOKE["size"]
        V, N, T = SMOKE["vocab_size"], SMOKE["batch_size"], SMOKE["time_size"]
    kw = dict(vocab_size=V, wordvec_size=D, hidden_size=H, cell=cell, init=init)
    if p["model"] == "BetterRnnlm":
        kw.update(
            num_layers=p["num_layers"],
            dropout_ratio=p.get("dropout", 0.0),
            variational=p.get("variational", True),
            tie_weights=p.get("tie_weights", False),
        )
    return dict(
        preset=name,
        cell=cell,
        model=p["model"],
        model_kwargs=kw,
        N=N,
        T=T,
        lr=p["lr"],
        max_grad_norm=p["max_grad_norm"],
    )


def make_batches(path: Path, spec: dict, n_train: int, n_eval: int, data: str, seed: int = 0):
    """Save (n, N, T) int32 windows to ``path`` (.npz); returns a description of the source."""
    import numpy as np  # noqa: PLC0415

    N, T, V = spec["N"], spec["T"], spec["model_kwargs"]["vocab_size"]
    if data == "ptb":
        from npgated.data import ptb  # noqa: PLC0415
        from npgated.data.batching import TBPTTBatcher, eval_batches  # noqa: PLC0415

        train, _, _ = ptb.load_data("train")
        test, _, _ = ptb.load_data("test")
        batcher = TBPTTBatcher(train, N, T)
        pairs = [batcher.next_batch() for _ in range(n_train)]
        wins = [(x, t) for x, t in eval_batches(test, N, T) if x.shape[1] == T][:n_eval]
        txs, tts = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        exs, ets = np.stack([w[0] for w in wins]), np.stack([w[1] for w in wins])
        source = f"PTB from {ptb.resolve_data_dir(download=False)}"
    else:
        rng = np.random.default_rng(seed)
        txs, tts = rng.integers(0, V, (2, n_train, N, T))
        exs, ets = rng.integers(0, V, (2, n_eval, N, T))
        source = f"random ids (seed {seed})"
    np.savez(
        path,
        train_xs=txs.astype(np.int32),
        train_ts=tts.astype(np.int32),
        eval_xs=exs.astype(np.int32),
        eval_ts=ets.astype(np.int32),
    )
    return source
