"""Figures of a training run, saved to files (never shown: no display is assumed)."""

from __future__ import annotations

from pathlib import Path


def plot_perplexity(history: list[dict], path) -> Path:
    """Training (per log interval) and validation (per epoch) perplexity, log scale.

    ``history`` holds the records of ``metrics.jsonl``: ``{"kind": "train", "progress":
    epochs as a float, "ppl": ...}`` and ``{"kind": "valid", "epoch": ..., "ppl": ...}``.
    When the records carry ``"bpc"`` (a character-level run), a right-hand axis reads the
    same curves in bits per character, log2(perplexity).
    """
    import matplotlib  # noqa: PLC0415 (import only when a figure is wanted)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    train = [(r["progress"], r["ppl"]) for r in history if r.get("kind") == "train"]
    valid = [(r["epoch"], r["ppl"]) for r in history if r.get("kind") == "valid"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if train:
        ax.plot(*zip(*train), label="train (interval mean)", lw=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="validation", lw=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    if any("bpc" in r for r in history):  # bpc = log2(ppl): a second scale on the same curves
        import numpy as np  # noqa: PLC0415
        from matplotlib import ticker  # noqa: PLC0415

        right = ax.secondary_yaxis("right", functions=(np.log2, np.exp2))
        right.set_yscale("linear")  # bpc is linear where perplexity is logarithmic
        right.yaxis.set_major_locator(ticker.MaxNLocator(6))
        right.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.2f"))
        right.yaxis.set_minor_formatter(ticker.NullFormatter())
        right.set_ylabel("bits per character")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy(history: list[dict], path) -> Path:
    """Test accuracy per epoch of an encoder-decoder run (the book's ch. 7-8 figures).

    ``history`` holds the records of ``metrics.jsonl``; those with ``{"kind": "test",
    "epoch": ..., "accuracy": fraction}`` are drawn, in percent, on a 0-100 axis.
    """
    import matplotlib  # noqa: PLC0415 (import only when a figure is wanted)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    points = [(r["epoch"], 100.0 * r["accuracy"]) for r in history if r.get("kind") == "test"]
    fig, ax = plt.subplots(figsize=(6, 4))
    if points:
        ax.plot(*zip(*points), "o-", lw=2, label="test accuracy")
        ax.legend(loc="lower right")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
