"""``npgated demo``: vanishing gradients and long-range tasks, RNN vs LSTM vs GRU, offline.

Needs no data and no network: every input is generated in code. It

1. measures ||dL/dh_t|| through a real backward pass of each cell, at initialisation and
   after training on the adding problem (``grad_flow.png``);
2. runs the book's matrix-power experiment (``matrix_power.png``);
3. trains an RNN in the exploding regime with and without gradient clipping
   (``clipping.png``);
4. trains RNN, LSTM and GRU on the adding, first-token and copy problems for growing
   sequence lengths T and scores them on held-out sequences (``success_vs_length.png``,
   ``results.md``, ``results.json``).

Usage::

    npgated demo --out demo [--quick] [--seed 0]
    python -m npgated.analysis.demo --out demo
    python -m npgated.analysis.demo --out docs/figures --merge s0/results.json s1/results.json

The full run takes a few minutes on a 2-core CPU, ``--quick`` well under a minute. See
:mod:`npgated.analysis.tasks` for the tasks and the model, and
:mod:`npgated.analysis.gradient_flow` for the measurements.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from npgated import __version__
from npgated.analysis import gradient_flow, plots
from npgated.analysis.tasks import CELLS, TASKS, task_batch, train_task

__all__ = [
    "DemoConfig",
    "DemoResult",
    "FULL",
    "QUICK",
    "blas_threads",
    "format_table",
    "main",
    "merge_runs",
    "run_demo",
    "seeds_table",
]

logger = logging.getLogger(__name__)

SOLVED = 0.9
"""A score at or above this counts as solved (bold in the table)."""


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of a demo run (all cells get the same budget).

    Attributes
    ----------
    lengths : dict
        ``{task: (T, ...)}``: the sequence lengths each task is trained at.
    iters : dict
        ``{task: iterations}`` of Adam per (task, cell, T).
    hidden_size, batch_size, n_test : int
    lr : float
        Adam's step size.
    max_norm : float
        Global-norm clipping threshold during training.
    grad_flow_T : int
        Length of the gradient-flow measurement; must be one of ``lengths["adding"]`` (the
        "after training" curves use the models trained there).
    matrix_power_T : int
        Steps of the matrix-power experiment.
    clip_T, clip_iters : int
        Sequence length and SGD iterations of the clipping experiment.
    """

    lengths: dict = field(default_factory=dict)
    iters: dict = field(default_factory=dict)
    hidden_size: int = 32
    batch_size: int = 32
    n_test: int = 512
    lr: float = 0.01
    max_norm: float = 1.0
    grad_flow_T: int = 100
    matrix_power_T: int = 50
    clip_T: int = 30
    clip_iters: int = 150


FULL = DemoConfig(
    lengths={
        "adding": (10, 25, 50, 100, 200),
        "first_token": (10, 25, 50, 100),
        "copy": (10, 25, 50, 100),
    },
    iters={"adding": 400, "first_token": 300, "copy": 800},
)
"""The full demo (a few minutes on 2 CPU cores)."""

QUICK = DemoConfig(
    lengths={"adding": (10, 50), "first_token": (10, 50), "copy": (10, 50)},
    iters={"adding": 250, "first_token": 150, "copy": 500},
    n_test=256,
    grad_flow_T=50,
    clip_iters=60,
)
"""``--quick``: two lengths per task, fewer iterations (well under a minute)."""


@dataclass
class DemoResult:
    """What :func:`run_demo` computed and wrote.

    Attributes
    ----------
    scores : dict
        ``{task: {cell: {T: score}}}`` (R^2 for the adding problem, accuracy otherwise).
    seconds : dict
        ``{part: seconds}`` wall-clock time of each part of the run, and ``"total"``.
    table : str
        The markdown table of ``scores`` (also in ``results.md``).
    files : dict
        ``{name: Path}`` of everything written.
    """

    scores: dict
    seconds: dict
    table: str
    files: dict


# ---------------------------------------------------------------------------------------
# The parts
# ---------------------------------------------------------------------------------------
def _matrix_power_curves(config: DemoConfig, seed: int) -> dict:
    """The book's experiment: dh @ Wh.T**k for sigma_max below / above 1 (and with tanh')."""
    from npgated.layers.rnn import TimeRNN  # noqa: PLC0415

    H, T = 16, config.matrix_power_T
    rng = np.random.default_rng(seed)
    curves = {}
    for sigma in (0.8, 0.95, 1.05, 1.2):
        Wh = gradient_flow.scaled_matrix(H, sigma, rng)
        curves[f"sigma_max = {sigma:g}"] = gradient_flow.matrix_power_norms(Wh, T)
    # The same sigma = 1.2 matrix inside a real tanh RNN: tanh' <= 1 joins every step.
    Wh = gradient_flow.scaled_matrix(H, 1.2, rng)
    N, D = 8, 4
    layer = TimeRNN(rng.standard_normal((D, H)) / np.sqrt(D), Wh, np.zeros(H))
    layer.eval()
    hs = layer.forward(rng.standard_normal((N, T, D)))
    curves["sigma_max = 1.2, with tanh'"] = gradient_flow.matrix_power_norms(
        Wh, T, dh=np.ones((N, H)), hs=hs
    )
    return curves


def _train_all(config: DemoConfig, seed: int, bar) -> tuple[dict, dict]:
    scores = {task: {cell: {} for cell in CELLS} for task in config.lengths}
    models = {}
    for task, lengths in config.lengths.items():
        for T in lengths:
            for cell in CELLS:
                bar.set_description(f"{task} T={T} {cell}")
                r = train_task(
                    task,
                    cell,
                    T,
                    iters=config.iters[task],
                    batch_size=config.batch_size,
                    hidden_size=config.hidden_size,
                    lr=config.lr,
                    max_norm=config.max_norm,
                    seed=seed,
                    n_test=config.n_test,
                    progress=bar.update,
                )
                bar.update(config.iters[task] - len(r.losses))  # a run that stopped early
                scores[task][cell][T] = r.score
                if task == "adding" and T == config.grad_flow_T:
                    models[cell] = r.model
    return scores, models


def _grad_flow_panels(config: DemoConfig, seed: int, trained: dict) -> dict:
    T = config.grad_flow_T
    init = {
        cell: gradient_flow.init_grad_norms(
            cell, "adding", T, hidden_size=config.hidden_size, seed=seed
        )
        for cell in CELLS
    }
    panels = {f"at initialisation (T = {T})": init}
    if trained:
        data_rng = np.random.default_rng([seed, 7])
        after = {}
        for cell, model in trained.items():
            xs, ys = task_batch("adding", config.n_test, T, data_rng, model.rnn.dtype)
            after[cell] = gradient_flow.model_grad_norms(model, xs, ys)
        panels[f"after training on the adding problem (T = {T})"] = after
    return panels


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------
def _cell_text(values) -> str:
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    text = f"{v.mean():.2f}" if len(v) == 1 else f"{v.mean():.2f} [{v.min():.2f}, {v.max():.2f}]"
    return f"**{text}**" if v.mean() >= SOLVED else text


def format_table(scores: dict) -> str:
    """A markdown table: one row per (task, cell), one column per sequence length.

    Parameters
    ----------
    scores : dict
        ``{task: {cell: {T: score or [scores over seeds]}}}``. Lists are shown as
        ``mean [min, max]``. Scores (means) >= 0.9 are bold.
    """
    all_T = sorted(
        {int(T) for per_cell in scores.values() for by_T in per_cell.values() for T in by_T}
    )
    lines = [
        "| task (score; chance) | cell | " + " | ".join(f"T = {T}" for T in all_T) + " |",
        "|---|---|" + "---:|" * len(all_T),
    ]
    for task, per_cell in scores.items():
        info = TASKS[task]
        label = f"{task} ({info.metric}; {info.chance:g})"
        for cell, by_T in per_cell.items():
            by_T = {int(T): v for T, v in by_T.items()}
            row = [_cell_text(by_T[T]) if T in by_T else "-" for T in all_T]
            lines.append(f"| {label} | {plots.CELL_LABELS[cell]} | " + " | ".join(row) + " |")
            label = ""
    return "\n".join(lines) + "\n"


def seeds_table(result_files) -> tuple[str, dict]:
    """Merge the ``results.json`` of several runs (different seeds) into one table.

    Returns
    -------
    table : str
        :func:`format_table` of the merged scores (``mean [min, max]`` per entry).
    merged : dict
        ``{task: {cell: {T: [score per run]}}}``.
    """
    merged: dict = {}
    for path in result_files:
        data = json.loads(Path(path).read_text())
        for task, per_cell in data["scores"].items():
            for cell, by_T in per_cell.items():
                for T, score in by_T.items():
                    merged.setdefault(task, {}).setdefault(cell, {}).setdefault(int(T), [])
                    merged[task][cell][int(T)].append(score)
    return format_table(merged), merged


# ---------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------
def blas_threads(limit: int | None):
    """A context that caps the BLAS thread pool at ``limit`` threads (None: leave it).

    The demo multiplies small matrices thousands of times; spreading each product over
    several threads costs more than it saves, and on a busy machine the waiting threads
    slow it down by an order of magnitude. Uses ``threadpoolctl`` if it is installed;
    otherwise it does nothing (set ``OPENBLAS_NUM_THREADS=1`` before starting Python).
    """
    if limit is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 (optional)
    except ImportError:
        logger.info(
            "threadpoolctl is not installed: BLAS keeps its default thread count "
            "(OPENBLAS_NUM_THREADS=1 makes the demo faster on a busy machine)"
        )
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def run_demo(
    out,
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = False,
    config: DemoConfig | None = None,
    threads: int | None = 1,
) -> DemoResult:
    """Run every part of the demo and write its figures and tables into ``out``.

    Parameters
    ----------
    out : str or Path
        Folder for ``grad_flow.png``, ``matrix_power.png``, ``clipping.png``,
        ``success_vs_length.png``, ``results.md`` and ``results.json`` (created if needed).
    quick : bool
        Use :data:`QUICK` instead of :data:`FULL`.
    seed : int
        Seeds every run (initial parameters, data, test sets).
    progress : bool
        Show a tqdm progress bar (on stderr).
    config : DemoConfig, optional
        Overrides ``quick``.
    threads : int or None
        Cap on BLAS threads during the run (see :func:`blas_threads`); None leaves it.

    Returns
    -------
    DemoResult
    """
    with blas_threads(threads):
        return _run_demo(out, quick=quick, seed=seed, progress=progress, config=config)


def _run_demo(out, *, quick, seed, progress, config) -> DemoResult:
    from tqdm.auto import tqdm  # noqa: PLC0415

    config = config or (QUICK if quick else FULL)
    if config.grad_flow_T not in config.lengths.get("adding", ()):
        raise ValueError(
            f"grad_flow_T = {config.grad_flow_T} must be one of the adding "
            f"problem's lengths {config.lengths.get('adding')}"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds, files = {}, {}
    start = time.perf_counter()
    total = sum(len(config.lengths[t]) * len(CELLS) * config.iters[t] for t in config.lengths)
    total += 2 * config.clip_iters
    with tqdm(
        total=total, desc="npgated demo", unit="it", disable=not progress, dynamic_ncols=True
    ) as bar:
        t0 = time.perf_counter()
        files["matrix_power"] = plots.plot_matrix_power(
            _matrix_power_curves(config, seed), out / "matrix_power.png"
        )
        seconds["matrix_power"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        bar.set_description("clipping")
        trace = gradient_flow.clipping_trace(
            config.clip_T,
            iters=config.clip_iters,
            max_norm=config.max_norm,
            seed=seed,
            progress=bar.update,
        )
        bar.update(2 * config.clip_iters - sum(len(n) for n in trace.norms.values()))
        files["clipping"] = plots.plot_clipping(trace, out / "clipping.png")
        seconds["clipping"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        scores, trained = _train_all(config, seed, bar)
        seconds["tasks"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    panels = _grad_flow_panels(config, seed, trained)
    files["grad_flow"] = plots.plot_grad_flow(
        panels,
        out / "grad_flow.png",
        title="Gradient reaching h_t when the loss sees only h_T (adding problem)",
    )
    seconds["grad_flow"] = time.perf_counter() - t0

    files["success"] = plots.plot_success(
        scores,
        out / "success_vs_length.png",
        chance={t: TASKS[t].chance for t in scores},
        metrics={t: TASKS[t].metric for t in scores},
        title=f"Held-out score vs sequence length (seed {seed})",
    )
    table = format_table(scores)
    seconds["total"] = time.perf_counter() - start

    header = (
        f"Seed {seed}, {'quick' if config is QUICK else 'full'} run: H = "
        f"{config.hidden_size}, batch {config.batch_size}, Adam lr {config.lr:g}, "
        f"clipping at {config.max_norm:g}, iterations "
        + ", ".join(f"{t} {n}" for t, n in config.iters.items())
        + f"; scores on {config.n_test} held-out sequences (bold: >= {SOLVED:g}).\n\n"
    )
    files["table"] = out / "results.md"
    files["table"].write_text(header + table)
    files["json"] = out / "results.json"
    files["json"].write_text(
        json.dumps(
            {
                "npgated": __version__,
                "seed": seed,
                "quick": config is QUICK,
                "config": asdict(config),
                "scores": {
                    t: {c: {str(T): s for T, s in by_T.items()} for c, by_T in pc.items()}
                    for t, pc in scores.items()
                },
                "seconds": seconds,
            },
            indent=1,
        )
    )
    return DemoResult(scores=scores, seconds=seconds, table=table, files=files)


def merge_runs(result_files, out) -> tuple[Path, Path]:
    """Write the table and the plot of several runs' ``results.json`` (e.g. seeds 0, 1, 2).

    Parameters
    ----------
    result_files : list of str or Path
        ``results.json`` files written by :func:`run_demo`.
    out : str or Path
        Folder for ``results_seeds.md`` (``mean [min, max]`` over the runs) and
        ``success_vs_length_seeds.png`` (mean, min to max shaded).

    Returns
    -------
    (table path, figure path)
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [json.loads(Path(p).read_text()).get("seed") for p in result_files]
    table, merged = seeds_table(result_files)
    table_path = out / "results_seeds.md"
    table_path.write_text(
        f"Mean [min, max] over seeds {', '.join(str(s) for s in seeds)}; bold: mean >= "
        f"{SOLVED:g}.\n\n" + table
    )
    figure = plots.plot_success(
        merged,
        out / "success_vs_length_seeds.png",
        chance={t: TASKS[t].chance for t in merged},
        metrics={t: TASKS[t].metric for t in merged},
        title="Held-out score vs sequence length, seeds "
        + ", ".join(str(s) for s in seeds)
        + " (mean; min to max shaded)",
    )
    return table_path, figure


def main(args) -> int:
    """The ``npgated demo`` command: run the demo, print the table, say where files are.

    Parameters
    ----------
    args : argparse.Namespace
        With ``out`` (folder), ``quick`` (bool) and ``seed`` (int).

    Returns
    -------
    int
        0 on success.
    """
    result = run_demo(args.out, quick=args.quick, seed=args.seed, progress=True)
    print(result.table)
    print(f"done in {result.seconds['total']:.0f} s; figures and tables in {Path(args.out)}/:")
    for path in result.files.values():
        print(f"  {path}")
    return 0


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m npgated.analysis.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="demo", help="folder for the table and figures")
    parser.add_argument("--quick", action="store_true", help="fewer lengths and steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RESULTS_JSON",
        help="instead of running: merge these runs' results.json (one per "
        "seed) into OUT/results_seeds.md and success_vs_length_seeds.png",
    )
    return parser.parse_args(argv)


def _module_main(argv=None) -> int:
    args = _parse_args(argv)
    if args.merge:
        table, figure = merge_runs(args.merge, args.out)
        print(table.read_text())
        print(f"wrote {table} and {figure}")
        return 0
    return main(args)


if __name__ == "__main__":
    sys.exit(_module_main())
