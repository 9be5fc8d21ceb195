#!/usr/bin/env python
"""Data-parallel training beyond this machine, on paper: predicted tokens/s for K = 1 ... 64.

::

    python benchmarks/scaling.py                      # the newest results/*-ranks.json
    python benchmarks/scaling.py --ranks-json benchmarks/results/2026-12-02-ranks.json

Inputs, measured by ``python benchmarks/bench.py --ranks 2`` on this machine, per preset:

* ``t_c``: one rank's compute per step (its N / 2 streams on one core, packing and
  unpacking the gradient buffer included): the 2-rank step time less its all-reduce time;
* ``bytes``: the gradient buffer exchanged per step (every unique parameter, float32).

The model. Each of K ranks keeps its N / 2 streams (weak scaling: the global batch is K N / 2
streams, so K is not limited by the preset's N = 20) and one core; a step is its compute
followed by one ring all-reduce of the buffer, nothing overlapped::

    t_ar(K) = 2 (K - 1) / K * bytes / bandwidth + 2 (K - 1) * latency      (t_ar(1) = 0)
    t(K)    = t_c + t_ar(K)
    tokens/s(K)   = K * (N / 2) * T / t(K)
    efficiency(K) = t_c / t(K)              (tokens/s over K times one rank's tokens/s)

The ring sends every byte 2 (K - 1) / K times over each rank's link (reduce-scatter, then
all-gather) in 2 (K - 1) rounds of one message each. Links: 1 Gbit/s and 10 Gbit/s Ethernet
(latency 50 and 20 microseconds per message), 100 Gbit/s InfiniBand-class (2 microseconds),
each used at its full nominal rate. Assumptions: one rank per machine (or ranks on one
machine sharing the link evenly is not modelled), the same compute on every rank (no
stragglers; a real run waits for the slowest rank each step), no overlap of the exchange
with the backward pass, and a cluster core as fast as this machine's.

Output: a Markdown table on stdout (and ``--md``), and a PNG (``--png``, default
``docs/figures/scaling.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

LINKS = (  # name, bits per second, latency per message in seconds
    ("1 Gbit/s", 1e9, 50e-6),
    ("10 Gbit/s", 10e9, 20e-6),
    ("100 Gbit/s", 100e9, 2e-6),
)
KS = (1, 2, 4, 8, 16, 32, 64)


def ring_allreduce_seconds(K: int, nbytes: float, bits_per_s: float, latency: float) -> float:
    """Time of one ring all-reduce of ``nbytes`` over K ranks (the model in the docstring)."""
    if K == 1:
        return 0.0
    return 2 * (K - 1) / K * nbytes * 8 / bits_per_s + 2 * (K - 1) * latency


def predict(t_compute: float, nbytes: float, tokens_per_rank: int, K: int, link) -> dict:
    """Predicted step time, tokens/s and efficiency of K ranks over ``link``."""
    _, bits_per_s, latency = link
    t = t_compute + ring_allreduce_seconds(K, nbytes, bits_per_s, latency)
    return dict(K=K, step_s=t, tok_s=K * tokens_per_rank / t, efficiency=t_compute / t)


def inputs(case: dict) -> dict:
    """t_c, bytes and tokens per rank from one case of a ``bench.py --ranks`` report."""
    r = case["ranks"]
    K = r["ranks"]
    step = r["ms_per_step"] / 1e3
    return dict(
        preset=case["preset"],
        t_compute=step * (1 - r["allreduce_share_in_step"]),
        nbytes=r["buffer_bytes"],
        tokens_per_rank=case["N"] // K * case["T"],
        measured_allreduce_ms=r["allreduce_alone_ms"],
        measured_ranks=K,
    )


def table(cases: list[dict]) -> str:
    lines = []
    for c in cases:
        lines += [
            f"**{c['preset']}**: t_c = {1e3 * c['t_compute']:.1f} ms per step "
            f"({c['tokens_per_rank']} tokens per rank), {c['nbytes'] / 2**20:.1f} MiB "
            f"exchanged per step (measured on one machine: "
            f"{c['measured_allreduce_ms']:.2f} ms for {c['measured_ranks']} ranks)",
            "",
            "| K | " + " | ".join(f"{name}: tok/s (eff.)" for name, _, _ in LINKS) + " |",
            "|---:|" + "---:|" * len(LINKS),
        ]
        for K in KS:
            cells = []
            for link in LINKS:
                p = predict(c["t_compute"], c["nbytes"], c["tokens_per_rank"], K, link)
                cells.append(f"{p['tok_s']:,.0f} ({100 * p['efficiency']:.0f} %)")
            lines.append(f"| {K} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(cases: list[dict], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 3.8), squeeze=False)
    ks = list(range(1, 65))
    for ax, c in zip(axes[0], cases):
        for link in LINKS:
            eff = [
                predict(c["t_compute"], c["nbytes"], c["tokens_per_rank"], K, link)["efficiency"]
                for K in ks
            ]
            ax.plot(ks, [100 * e for e in eff], label=link[0])
        ax.set_xscale("log", base=2)
        ax.set_xticks(KS, [str(k) for k in KS])
        ax.set_ylim(0, 105)
        ax.set_xlabel("ranks K (one per machine)")
        ax.set_ylabel("predicted efficiency (%)")
        ax.set_title(
            f"{c['preset']}: {c['nbytes'] / 2**20:.0f} MiB per step, "
            f"t_c = {1e3 * c['t_compute']:.0f} ms"
        )
        ax.grid(alpha=0.3)
        ax.legend(title="ring all-reduce over")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--ranks-json",
        default=None,
        help="a bench.py --ranks report (default: the newest results/*-ranks.json)",
    )
    p.add_argument("--png", default=str(ROOT / "docs" / "figures" / "scaling.png"))
    p.add_argument("--md", default=None, help="also write the table to this file")
    args = p.parse_args(argv)
    path = (
        Path(args.ranks_json)
        if args.ranks_json
        else max((HERE / "results").glob("*-ranks.json"), default=None)
    )
    if path is None or not path.exists():
        print("no ranks report: run python benchmarks/bench.py --ranks 2 first", file=sys.stderr)
        return 2
    cases = [inputs(c) for c in json.loads(path.read_text())["cases"]]
    md = f"Predicted from {path.name} (model and assumptions: benchmarks/scaling.py)\n\n" + table(
        cases
    )
    print(md)
    if args.md:
        Path(args.md).write_text(md)
    plot(cases, Path(args.png))
    print(f"figure: {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
