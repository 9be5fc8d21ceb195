"""Where an AttentionSeq2seq looks: its attention weights for one question, drawn as a map.

The book's ``ch08/visualize_attention.py`` runs its trained date model forward on a test
question and its correct answer (teacher forcing) and draws the decoder's attention weights
(its ``TimeAttention``'s, one row per output character, one column per input character), the
columns put back into reading order for a model that reads its questions reversed.
:func:`attention_weights` does the same for any question and answer (``npgated attention``
uses the model's own greedy answer unless one is given: greedy decoding feeds back its own
outputs, so teacher forcing on them gives the weights the decoding used); :func:`plot_attention`
draws them (matplotlib on an Agg canvas, saved to a file, never shown).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npgated import backend

__all__ = ["attention_weights", "plot_attention"]


def attention_weights(model, xs, ts, reverse: bool = False):
    """The (T_dec, T_enc) attention weights of ``model`` writing answer ``ts`` to question ``xs``.

    Parameters
    ----------
    model : AttentionSeq2seq
        Its ``attention_weights`` (N, T_dec, T_enc) after a teacher-forced forward pass are
        read.
    xs : (1, T_enc) int array
        The question's ids as the model reads them (reversed if it reads reversed questions).
    ts : (1, 1 + T_dec) int array
        The start symbol, then the answer: the model's own greedy answer (``generate``) gives
        the weights its decoding used, as the book's ``visualize_attention.py`` does with
        the correct answer.
    reverse : bool
        The model reads reversed questions: the columns are put back into reading order.

    Returns
    -------
    (T_dec, T_enc) float64 host array
        Row j: output character j's distribution over the input characters.
    """
    if not getattr(model, "attentive", False):
        raise ValueError(
            f"{type(model).__name__} has no attention weights: attention maps need "
            "an AttentionSeq2seq"
        )
    model.forward(backend.to_device(xs), backend.to_device(ts))  # teacher forcing, as the book
    weights = np.asarray(backend.to_cpu(model.attention_weights), dtype=np.float64)[0]
    return weights[:, ::-1] if reverse else weights


def plot_attention(weights, question: str, answer: str, path) -> Path:
    """Draw ``weights`` (T_dec, T_enc) with the input characters along x and the output
    characters down y (black 0, white 1, as the book's figure 8-26); write ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    weights = np.asarray(weights)
    T_dec, T_enc = weights.shape
    if len(question) != T_enc or len(answer) != T_dec:
        raise ValueError(
            f"weights of shape {weights.shape} need a question of {T_enc} and an "
            f"answer of {T_dec} characters, got {len(question)} and {len(answer)}"
        )
    fig = Figure(figsize=(max(4.0, 0.3 * T_enc + 1.5), max(3.0, 0.3 * T_dec + 1.2)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    mesh = ax.pcolormesh(weights, cmap="Greys_r", vmin=0.0, vmax=1.0)
    ax.set_xticks(np.arange(T_enc) + 0.5)
    ax.set_yticks(np.arange(T_dec) + 0.5)
    ax.set_xticklabels(["␣" if c == " " else c for c in question], fontfamily="monospace")
    ax.set_yticklabels(["␣" if c == " " else c for c in answer], fontfamily="monospace")
    ax.invert_yaxis()
    ax.xaxis.tick_top()
    ax.set_xlabel("input (question)")
    ax.set_ylabel("output (answer)")
    fig.colorbar(mesh, ax=ax, fraction=0.03, pad=0.02, label="attention weight")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
