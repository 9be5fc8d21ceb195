"""The results as tables: text on stdout, Markdown beside the JSON, and the docs' results block.

One row per (preset, cell, implementation) with the derived columns (ratios to PyTorch, GFLOP/s,
fractions of the GEMM ceiling and of the GEMM-only step); with ``--book-dir``, the table of
whole-process evaluation against the book's ``eval.py`` (``book_eval_markdown``) after it;
``--update-readme`` replaces what stands between the two markers in ``benchmarks/README.md``
and in ``docs/speed.md`` (the project README links that page).
"""

from __future__ import annotations

import statistics
from pathlib import Path

README = Path(__file__).resolve().parent / "README.md"
SPEED_PAGE = README.parent.parent / "docs" / "speed.md"  # the project's speed page
READMES = (README, SPEED_PAGE)  # the pages --update-readme fills
README_START = "<!-- bench:results:start -->"
README_END = "<!-- bench:results:end -->"


def _fmt_int(x):
    return "–" if x is None else f"{x:,.0f}"


def _fmt(x, spec=".2f", suffix=""):
    return "–" if x is None else f"{x:{spec}}{suffix}"


def table_rows(report: dict) -> list[dict]:
    """One flat row per (preset, cell, impl) with the derived columns."""
    ceiling = (report["gemm"].get("numpy") or {}).get("best_gflops")
    rows = []
    by_key = {(r["preset"], r["cell"], r["impl"]): r for r in report["results"]}
    for r in report["results"]:
        train = (r.get("train") or {}).get("tok_s")
        ev = (r.get("eval") or {}).get("tok_s")
        torch_r = by_key.get((r["preset"], r["cell"], "torch"))
        t_train = (torch_r or {}).get("train", {}).get("tok_s") if r["impl"] != "torch" else None
        t_eval = (torch_r or {}).get("eval", {}).get("tok_s") if r["impl"] != "torch" else None
        gflops = train * r["flops_per_token"]["train"] / 1e9 if train else None
        g_train = (r.get("gemm_only_train") or {}).get("tok_s")
        g_eval = (r.get("gemm_only_eval") or {}).get("tok_s")
        others = [
            x
            for rep in ("train", "eval")
            for x in ((r.get(rep) or {}).get("others_cores") or [])
            if x is not None
        ]
        rows.append(
            {
                "preset": r["preset"],
                "cell": r["cell"],
                "impl": r["impl"],
                "train": train,
                "eval": ev,
                "eval_over_train": ev / train if ev and train else None,
                "train_ratio": train / t_train if train and t_train else None,
                "eval_ratio": ev / t_eval if ev and t_eval else None,
                "gflops": gflops,
                "ceiling_frac": gflops / ceiling if gflops and ceiling else None,
                "ceiling_tok_s": ceiling * 1e9 / r["flops_per_token"]["train"] if ceiling else None,
                "gemm_only": g_train,
                "of_gemm_only": train / g_train if train and g_train else None,
                "gemm_only_ratio": g_train / t_train if g_train and t_train else None,
                "eval_of_gemm_only": ev / g_eval if ev and g_eval else None,
                "rss": r.get("peak_rss_mib"),
                "busy_before": (r.get("load_before") or {}).get("busy_cores"),
                "others_max": max(others) if others else None,
                "error": r.get("error"),
            }
        )
    return rows


HEADER = [
    "preset",
    "cell",
    "impl",
    "train tok/s",
    "eval tok/s",
    "eval/train",
    "train ×torch",
    "eval ×torch",
    "GFLOP/s",
    "of GEMM ceiling",
    "ceiling tok/s",
    "GEMM-only tok/s",
    "of GEMM-only",
    "GEMM-only ×torch",
    "eval of GEMM-only",
    "peak RSS MiB",
    "busy before",
    "others during",
]


def _cells(row):
    if row["error"]:
        first = row["error"].strip().splitlines()[-1][:60]
        return [row["preset"], row["cell"], row["impl"], f"error: {first}"] + [""] * 14
    return [
        row["preset"],
        row["cell"],
        row["impl"],
        _fmt_int(row["train"]),
        _fmt_int(row["eval"]),
        _fmt(row["eval_over_train"], ".2f", "×"),
        _fmt(row["train_ratio"], ".2f", "×"),
        _fmt(row["eval_ratio"], ".2f", "×"),
        _fmt(row["gflops"], ".1f"),
        _fmt(None if row["ceiling_frac"] is None else 100 * row["ceiling_frac"], ".0f", " %"),
        _fmt_int(row["ceiling_tok_s"]),
        _fmt_int(row.get("gemm_only")),
        _fmt(None if row.get("of_gemm_only") is None else 100 * row["of_gemm_only"], ".0f", " %"),
        _fmt(row.get("gemm_only_ratio"), ".2f", "×"),
        _fmt(
            None if row.get("eval_of_gemm_only") is None else 100 * row["eval_of_gemm_only"],
            ".0f",
            " %",
        ),
        _fmt(row["rss"], ".0f"),
        _fmt(row["busy_before"], ".2f"),
        _fmt(row["others_max"], ".2f"),
    ]


def text_table(rows) -> str:
    cells = [HEADER] + [_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    right = set(range(3, len(HEADER)))
    out = []
    for n, c in enumerate(cells):
        out.append(
            "  ".join(
                s.rjust(w) if i in right else s.ljust(w) for i, (s, w) in enumerate(zip(c, widths))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_report(report: dict) -> str:
    m, s = report["machine"], report["settings"]
    gemm = report["gemm"]
    kernel = None
    for r in report["results"] + [gemm.get("numpy") or {}]:
        for d in r.get("threadpool") or []:
            if d.get("internal_api") == "openblas":
                kernel = f"OpenBLAS {d.get('version')} kernel {d.get('architecture')}"
    blas = kernel or ((m.get("numpy_blas") or {}).get("name") or "?")
    lines = [
        f"Measured {report['date']} on {m['cpu_model']} ({m['cores']} cores, "
        f"{s['threads']} threads per process), NumPy {m['numpy']} ({blas}), "
        f"PyTorch {m['torch'] or 'not installed'}; npgated {m.get('npgated_git') or '?'}.",
        f"Float32, {s['iters']} iterations per repeat after {s['warmup']} warm-up, median of "
        f"{s['repeats']} repeats"
        + (
            f", then the median over {s['rounds']} rounds (a child each, the implementations "
            f"alternating)"
            if s.get("rounds", 1) > 1
            else ""
        )
        + f"; data: {s['data_source']}; "
        f"OPENBLAS_CORETYPE={m['env'].get('OPENBLAS_CORETYPE')!s}, "
        f"OPENBLAS_L2_SIZE={m['env'].get('OPENBLAS_L2_SIZE')!s}"
        f"{' (unset in the children)' if s['unset_openblas_env'] else ''}"
        f"{'; SMOKE RUN (tiny sizes, numbers meaningless)' if s['smoke'] else ''}.",
        f"GEMM ceiling (best fp32 GEMM, NumPy): "
        f"{_fmt((gemm.get('numpy') or {}).get('best_gflops'), '.1f')} GFLOP/s"
        + (
            f"; PyTorch: {_fmt(gemm['torch'].get('best_gflops'), '.1f')} GFLOP/s"
            if gemm.get("torch")
            else ""
        )
        + ".",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if i < 3 else "---:" for i in range(len(HEADER))) + "|",
    ]
    for row in table_rows(report):
        lines.append("| " + " | ".join(_cells(row)) + " |")
    lines += [
        "",
        "`npgated`: npgated's own threads off, BLAS with its threads; "
        "`npgated-threads`: npgated.parallel's threads on, BLAS one thread per call "
        "(`npgated eval` runs so, and `npgated train` for models whose recurrent step "
        "product is too small to split, such as book-small; `NPGATED_THREADS` "
        "chooses). "
        "`train ×torch` and `eval ×torch`: npgated tokens/s over PyTorch's in the same "
        "run. `GFLOP/s`: training GEMM FLOPs per token × tokens/s; `of GEMM ceiling`: that "
        "over the best NumPy GEMM rate; `ceiling tok/s`: the GEMM-only limit at that "
        "best rate. `GEMM-only tok/s`: measured in the npgated process, a training step "
        "that makes only npgated's GEMM calls, at their exact shapes and layouts (the "
        "most this design reaches with this BLAS: everything else free); `of GEMM-only`: "
        "npgated's training rate over it; `GEMM-only ×torch`: it over PyTorch's training "
        "rate, the largest `train ×torch` possible; `eval of GEMM-only`: the same for "
        "evaluation (forward GEMMs only). `busy before`: cores busy (all processes) in "
        "the second before the child started; `others during`: most cores used by other "
        "processes during a timed repeat.",
    ]
    if report.get("book_eval"):  # bench.py --book-dir: the whole-process table (book_eval.py)
        lines += ["", book_eval_markdown(report["book_eval"]).rstrip("\n")]
    # npgated.info's check of the BLAS kernel against the CPU (e.g. OPENBLAS_CORETYPE=Haswell
    # on an AVX-512 machine): numbers measured so are not this machine's best
    lines += [f"\n**WARNING**: {w}" for w in m.get("blas_kernel_warnings") or []]
    return "\n".join(lines) + "\n"


BOOK_EVAL_TITLE = "Evaluation, whole process, against the book's eval.py"
BOOK_EVAL_HEADER = [
    "command",
    "protocol",
    "median s",
    "min s",
    "max s",
    "test perplexity",
    "book ÷ this",
    "its cores",
    "others during",
]
_BOOK_EVAL_ROWS = (  # (key in result["commands"], command as typed, protocol, ratio key)
    ("book", "`python eval.py` (the book's, in `ch06/`)", "book (10 × 35, whole windows)", None),
    ("npgated_book", "`npgated eval RUN --split test --protocol book`", "book", "book_protocol"),
    ("npgated", "`npgated eval RUN --split test`", "default (every target)", "default_protocol"),
)


def book_eval_markdown(result: dict) -> str:
    """The table of ``book_eval.run_book_eval``'s result: seconds per command, ratios, checks.

    A refused or failed measurement renders as one line with the reason and no speed.
    """
    title = f"**{BOOK_EVAL_TITLE}** (PTB test split, the book's trained `Rnnlm.pkl`)"
    if result.get("error"):
        return f"{title}: no result. {result['error']}\n"
    ratios, cmds = result["ratios"], result["commands"]
    lines = [
        title,
        "",
        "| " + " | ".join(BOOK_EVAL_HEADER) + " |",
        "|---|---|" + "---:|" * (len(BOOK_EVAL_HEADER) - 2),
    ]
    for key, typed, protocol, ratio in _BOOK_EVAL_ROWS:
        c = cmds[key]
        d = c.get("decimals")
        ppl = _fmt(c["perplexity"], f".{4 if d is None else min(d, 4)}f")
        others = [x for x in c["others_cores"] if x is not None]
        lines.append(
            "| "
            + " | ".join(
                [
                    typed,
                    protocol,
                    _fmt(c["median_s"]),
                    _fmt(c["min_s"]),
                    _fmt(c["max_s"]),
                    ppl,
                    _fmt(ratios[ratio], ".2f", "×") if ratio else "–",
                    _fmt(statistics.median(c["child_cores"]), ".2f"),
                    _fmt(max(others) if others else None, ".2f"),
                ]
            )
            + " |"
        )
    check, blas, env = result["perplexity_check"], result.get("blas") or {}, result["env"]
    caches = (
        "existed before"
        if result["book_caches_before"]
        else "were written by the warm-up"
        if result["warmup"]
        else "were written by its first timed run (no warm-up: that run is slower)"
    )
    lines += [
        "",
        (
            f"From the interpreter's start to the printed perplexity (wall clock around "
            f"`subprocess.run`), median, min and max over {result['repeats']} round(s) after "
            f"{result['warmup']} untimed warm-up(s) of each command; the three commands alternate "
            f"(order reversed every other round), each after waiting up to "
            f"{_fmt(result.get('wait_quiet_s'), '.0f')} s for at most "
            f"{_fmt(result.get('max_busy_cores'), '.2f')} busy cores. The same interpreter "
            f"(Python {result.get('python_version') or '?'}) and environment for all: "
            f"OMP/OPENBLAS/MKL threads "
            f"{env.get('OPENBLAS_NUM_THREADS')}, "
            f"OPENBLAS_CORETYPE={env.get('OPENBLAS_CORETYPE')!s}, "
            f"OPENBLAS_L2_SIZE={env.get('OPENBLAS_L2_SIZE')!s}"
            f"{' (unset in the children)' if result.get('unset_openblas_env') else ''}; "
            f"{blas.get('kernel') or 'BLAS kernel unknown'} on {blas.get('cpu') or '?'}. "
            f"The book's corpus caches (`dataset/ptb.vocab.pkl`, `ptb.test.npy`) {caches}. "
            f"npgated's book protocol printed "
            f"{check['npgated_book']} and the book's script {check['book']} (agreeing within "
            f"{check['tolerance']:g}; a mismatch refuses the speed). `book ÷ this`: the book's "
            f"median seconds over this command's; `its cores`: CPU time of the process over its "
            f"wall time; `others during`: most cores other processes used during one run."
        ),
    ]
    return "\n".join(lines) + "\n"


def update_readme(markdown: str) -> bool:
    """Put ``markdown`` between the markers of ``benchmarks/README.md`` and of
    ``docs/speed.md``; True if both had them."""
    done = []
    for readme in READMES:
        text = readme.read_text()
        if README_START not in text or README_END not in text:
            done.append(False)
            continue
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        readme.write_text(f"{head}{README_START}\n{markdown}{README_END}{tail}")
        done.append(True)
    return all(done)
