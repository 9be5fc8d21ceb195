"""What the matrix products alone allow: FLOPs per token, the GEMM ceiling, the GEMM-only step.

GEMM ceiling: a separate NumPy child measures the best float32 matrix-multiply rate (GFLOP/s)
over square sizes. Training GEMM FLOPs per token (element-wise work not counted)::

    k     = gates per cell (LSTM 4, GRU 3, RNN 1)
    D_1   = D (embedding size), D_l = H for l > 1
    fwd   = sum over layers l of 2 * D_l * k*H      # input projection  x @ Wx
          + sum over layers l of 2 * H   * k*H      # recurrent         h @ Wh
          + 2 * H * V                               # output projection h @ W_out
    train = 3 * fwd     # backward: one GEMM for the input gradient and one for the
                        # weight gradient per forward GEMM, each as large as the forward one

The embedding lookup costs no FLOPs. ``GFLOP/s = train tok/s * train / 1e9``; the fraction of
the ceiling is that over the NumPy GEMM rate, and ``ceiling tok/s = GEMM rate / train`` is the
speed a run would reach if it did nothing but GEMMs at the best rate.

GEMM-only step: the npgated child also times a step that makes only npgated's GEMM calls at
their exact shapes and layouts (``gemm_only_steps``), so the table shows how close the
implementation is to what its GEMMs allow, and the largest ratio to PyTorch they allow.
"""

from __future__ import annotations

import math
import time

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
GEMM_SIZES = (512, 1024, 1536, 2048)


def gemm_flops_per_token(model_kwargs: dict) -> dict:
    """GEMM FLOPs per token: ``forward`` (evaluation) and ``train`` (3x forward); see top."""
    k = GATES[model_kwargs["cell"]]
    D, H = model_kwargs["wordvec_size"], model_kwargs["hidden_size"]
    V, L = model_kwargs["vocab_size"], model_kwargs.get("num_layers", 1)
    fwd = 0
    for layer in range(L):
        d_in = D if layer == 0 else H
        fwd += 2 * d_in * k * H + 2 * H * k * H
    fwd += 2 * H * V
    return {"forward": fwd, "train": 3 * fwd}


def child_gemm_numpy(spec, result):
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(0)
    rates = {}
    for n in spec["gemm_sizes"]:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        rates[str(n)] = _best_gemm_rate(
            lambda a=a, b=b, c=c: np.matmul(a, b, out=c), n, spec["gemm_min_s"]
        )
    result["gflops_by_size"] = rates
    result["best_gflops"] = max(rates.values())


def child_gemm_torch(spec, result):
    import torch  # noqa: PLC0415

    torch.set_num_threads(spec["threads"])
    g = torch.Generator().manual_seed(0)
    rates = {}
    with torch.no_grad():
        for n in spec["gemm_sizes"]:
            a = torch.randn(n, n, generator=g)
            b = torch.randn(n, n, generator=g)
            c = torch.empty(n, n)
            rates[str(n)] = _best_gemm_rate(
                lambda a=a, b=b, c=c: torch.mm(a, b, out=c), n, spec["gemm_min_s"]
            )
    result["gflops_by_size"] = rates
    result["best_gflops"] = max(rates.values())
    result["torch_version"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()


def _best_gemm_rate(fn, n, min_s):
    fn()  # warm up (thread pool start, page faults)
    best = math.inf
    start = time.perf_counter()
    runs = 0
    while runs < 3 or time.perf_counter() - start < min_s:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        runs += 1
    return round(2 * n**3 / best / 1e9, 2)


def gemm_only_steps(spec):
    """(train, eval) callables doing only the GEMMs of one npgated step, at its exact shapes.

    The same calls as the layers make, in the same order and orientation, on arrays laid out
    as theirs are (per-step slices of the (N, T + 1, H) state buffer, transposed views of the
    gate gradients): the time the step would take if everything that is not a GEMM (gate
    nonlinearities, softmax, dropout, clipping, the update, Python) were free. Its tokens/s
    is the most this design can reach with this BLAS on this machine.
    """
    import numpy as np  # noqa: PLC0415

    kw = spec["model_kwargs"]
    N, T = spec["N"], spec["T"]
    V, D, H = kw["vocab_size"], kw["wordvec_size"], kw["hidden_size"]
    G = GATES[kw["cell"]] * H
    L = kw.get("num_layers", 1)
    tied = kw.get("tie_weights", False)
    rng = np.random.default_rng(0)

    def a(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    fwd, bwd = [], []  # lists of (A, B, out) for np.matmul(A, B, out=out)
    for layer in range(L):
        d_in = D if layer == 0 else H
        Wx, Wh, xs, hs = a(d_in, G), a(H, G), a(N * T, d_in), a(N, T + 1, H)
        gates, da = a(N * T, G), a(N, T, G)
        dhT, dxs, dWx, dWh = a(H, N), a(N * T, d_in), a(d_in, G), a(H, G)
        fwd.append([(xs, Wx, gates)] + [(hs[:, t], Wh, a(N, G)) for t in range(T)])
        bwd.insert(
            0,
            [(Wh, da[:, t].T, dhT) for t in reversed(range(T))]
            + [
                (da.reshape(N * T, G), Wx.T, dxs),
                (xs.T, da.reshape(N * T, G), dWx),
                (hs[:, :-1].reshape(N * T, H).T, da.reshape(N * T, G), dWh),
            ],
        )
    logits, dx = a(N * T, V), a(N * T, H)
    if tied:  # x @ W.T; dx = dy @ W; dW = dy.T @ x (bias added separately)
        W, x, dW = a(V, H), a(N * T, H), a(V, H)
        out_f = [(x, W.T, logits)]
        out_b = [(logits, W, dx), (logits.T, x, dW)]
    else:  # bias folded in: [x | 1] @ [W ; b]
        Wb, x1, dWb = a(H + 1, V), a(N * T, H + 1), a(H + 1, V)
        out_f = [(x1, Wb, logits)]
        out_b = [(logits, Wb[:H].T, dx), (x1.T, logits, dWb)]
    train_calls = [c for f in fwd for c in f] + out_f + out_b + [c for b in bwd for c in b]
    eval_calls = [c for f in fwd for c in f] + out_f

    def runner(calls):
        def step(k):
            for A, B, out in calls:
                np.matmul(A, B, out=out)

        return step

    return runner(train_calls), runner(eval_calls)
