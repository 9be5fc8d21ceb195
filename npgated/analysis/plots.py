"""Figures of the gradient-flow experiments and the long-range tasks, saved as PNG files.

Drawn with matplotlib's object-oriented API on an Agg canvas (``Figure`` +
``FigureCanvasAgg``): no display is needed, nothing is shown, and the process-wide pyplot
backend is left alone. Each function takes the numbers computed by
:mod:`npgated.analysis.gradient_flow` / :mod:`npgated.analysis.tasks`, writes one file and
returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "CELL_COLORS",
    "CELL_LABELS",
    "plot_clipping",
    "plot_grad_flow",
    "plot_matrix_power",
    "plot_success",
]

CELL_COLORS = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
CELL_LABELS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
CELL_STYLES = {"rnn": "o-", "lstm": "s-", "gru": "^--"}


def _figure(ncols: int = 1, width: float = 6.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width * ncols, height))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, k + 1) for k in range(ncols)]
    return fig, axes


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _positive(values) -> np.ndarray:
    """Values as float64 with zeros and non-finite entries masked (nan) for a log axis."""
    v = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def plot_grad_flow(panels: dict, path, title: str = "") -> Path:
    """||dL/dh_t|| against the time step t, log scale, one panel per situation.

    Parameters
    ----------
    panels : dict
        ``{panel title: {cell: norms (T,)}}``, e.g. ``{"at initialisation": {...},
        "after training": {...}}``; each curve is divided by its value at the last step.
    path : str or Path
        The PNG file to write.
    title : str
        Figure title.
    """
    fig, axes = _figure(len(panels), width=5.5)
    for ax, (name, curves) in zip(axes, panels.items()):
        for cell, norms in curves.items():
            n = _positive(norms)
            n = n / n[-1]
            ax.plot(
                np.arange(len(n)),
                n,
                color=CELL_COLORS.get(cell),
                label=CELL_LABELS.get(cell, cell),
                lw=2,
            )
        ax.set_yscale("log")
        ax.set_xlabel("time step t (the loss sees only the last one)")
        ax.set_ylabel("||dL/dh_t|| / ||dL/dh_T||")
        ax.set_title(name)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_matrix_power(curves: dict, path, title: str = "") -> Path:
    """Norm of dh after k backward steps through ``Wh`` (the book's matrix-power experiment).

    Parameters
    ----------
    curves : dict
        ``{label: norms (T + 1,)}`` from :func:`~npgated.analysis.gradient_flow.
        matrix_power_norms`; labels containing "tanh" are drawn dashed.
    path : str or Path
    title : str
    """
    fig, (ax,) = _figure(1, width=6.5)
    for k, (label, norms) in enumerate(curves.items()):
        n = _positive(norms)
        style = "--" if "tanh" in label else "-"
        ax.plot(np.arange(len(n)), n, style, color=f"C{k}", label=label, lw=2)
    ax.set_yscale("log")
    ax.set_xlabel("steps back in time k")
    ax.set_ylabel("||dh_k|| / ||dh_0||")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "dh pushed back through Wh: exponential growth or decay")
    return _save(fig, path)


def plot_clipping(trace, path, title: str = "") -> Path:
    """Gradient norm and loss per iteration, with and without clipping (two panels).

    Parameters
    ----------
    trace : ClippingTrace
        From :func:`~npgated.analysis.gradient_flow.clipping_trace`.
    path : str or Path
    title : str
    """
    fig, (ax_n, ax_l) = _figure(2, width=5.5)
    colors = {"no clipping": "tab:red", "clipping": "tab:blue"}
    for label, norms in trace.norms.items():
        color = colors.get(label)
        n = _positive(norms)
        loss = _positive(trace.losses[label])
        stopped = trace.diverged_at.get(label)
        if stopped is not None:
            label = f"{label} (diverged at iteration {stopped})"
        ax_n.plot(np.arange(len(n)), n, color=color, label=label, lw=1.5)
        ax_l.plot(np.arange(len(loss)), loss, color=color, label=label, lw=1.5)
        if stopped is not None:  # an x on the last finite value of each curve
            for ax, v in ((ax_n, n), (ax_l, loss)):
                finite = np.flatnonzero(np.isfinite(v))
                if len(finite):
                    ax.plot([finite[-1]], [v[finite[-1]]], "x", color=color, ms=10, mew=2)
    ax_n.axhline(trace.max_norm, color="k", ls="--", lw=1, label=f"max_norm = {trace.max_norm:g}")
    ax_n.set_yscale("log")
    ax_n.set_xlabel("iteration")
    ax_n.set_ylabel("global gradient norm (before clipping)")
    ax_n.legend(fontsize=8)
    ax_n.grid(True, which="major", alpha=0.3)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("iteration")
    ax_l.set_ylabel("training loss")
    ax_l.legend(fontsize=8)
    ax_l.grid(True, which="major", alpha=0.3)
    fig.suptitle(
        title
        or (
            f"RNN started in the exploding regime (Wh = {trace.sigma:g} x "
            f"orthogonal, T = {trace.T}): SGD (lr {trace.lr:g}) with and "
            "without clipping"
        )
    )
    return _save(fig, path)


def plot_success(
    scores: dict, path, chance: dict | None = None, metrics: dict | None = None, title: str = ""
) -> Path:
    """Score against sequence length, one panel per task, one line per cell.

    Parameters
    ----------
    scores : dict
        ``{task: {cell: {T: score}}}`` (a score may be a list over seeds: the mean is drawn
        with the range from min to max shaded). Scores below ``min(0, chance) - 0.1`` are drawn
        at that floor.
    path : str or Path
    chance : dict, optional
        ``{task: chance score}``, drawn as a dashed line.
    metrics : dict, optional
        ``{task: y-axis label}``.
    title : str
    """
    fig, axes = _figure(len(scores), width=4.5)
    for ax, (task, per_cell) in zip(axes, scores.items()):
        # Scores below the floor (an R^2 far below 0) are drawn at the floor.
        floor = min(0.0, (chance or {}).get(task, 0.0)) - 0.1
        for cell, by_T in per_cell.items():
            Ts = sorted(by_T)
            vals = [
                np.maximum(np.atleast_1d(np.asarray(by_T[T], dtype=np.float64)), floor) for T in Ts
            ]
            mean = np.array([v.mean() for v in vals])
            color = CELL_COLORS.get(cell)
            hollow = cell == "gru"  # drawn over the LSTM's squares: keep both visible
            ax.plot(
                Ts,
                mean,
                CELL_STYLES.get(cell, "o-"),
                color=color,
                label=CELL_LABELS.get(cell, cell),
                lw=2,
                ms=10 if hollow else 6,
                mfc="white" if hollow else color,
                mew=2 if hollow else 1,
            )
            if any(len(v) > 1 for v in vals):
                ax.fill_between(
                    Ts, [v.min() for v in vals], [v.max() for v in vals], color=color, alpha=0.15
                )
        if chance and task in chance:
            what = "chance" if chance[task] > 0 else "chance / mean prediction"
            ax.axhline(chance[task], color="gray", ls="--", lw=1, label=what)
        ax.set_xscale("log")
        ax.minorticks_off()
        all_T = sorted({T for by_T in per_cell.values() for T in by_T})
        ax.set_xticks(all_T)
        ax.set_xticklabels([str(T) for T in all_T])
        ax.set_xlabel("sequence length T")
        ax.set_ylabel((metrics or {}).get(task, "score"))
        ax.set_ylim(floor - 0.02, 1.05)
        ax.set_title(task)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
