"""What a child process measures: one kind of measurement per process, its result as JSON.

The kinds: ``npgated`` and ``torch`` (training and evaluation tokens/s of one case, and for
npgated the GEMM-only steps), ``profile`` (npgated under the profilers), ``gemm-numpy`` and
``gemm-torch`` (the square GEMM ceiling).

Allocator: each implementation runs as its users run it. The npgated (and NumPy GEMM) children
first call :func:`npgated.allocator.keep_freed_memory`, as ``npgated.training.fit`` and the
``npgated`` command do (glibc malloc keeps freed large blocks for the next step instead of
unmapping them); ``--default-malloc`` leaves glibc's defaults there too. The PyTorch children
keep glibc's defaults: measured on 2026-11-30 (book-better LSTM, two alternating runs each),
the setting made PyTorch slower (1,487 and 1,611 tok/s with it, 1,635 and 1,791 without; its
peak RSS grew from ~760 to ~1,270 MiB) while it made npgated faster (1,752 and 1,650 tok/s
with it, 1,607 and 1,603 without).
"""

from __future__ import annotations

import importlib.util
import json
import os
import traceback
from pathlib import Path

from gemm_only import child_gemm_numpy, child_gemm_torch, gemm_only_steps
from harness import load_batches, time_runs
from profiling import run_profile
from system import OPENBLAS_VARS, THREAD_VARS, rss_mib, threadpool_info

HERE = Path(__file__).resolve().parent


def _child_npgated(spec, result):
    import numpy as np  # noqa: PLC0415

    from npgated import parallel  # noqa: PLC0415
    from npgated.models.rnnlm import BetterRnnlm, Rnnlm  # noqa: PLC0415

    # "npgated": its own threads off, BLAS with its --threads threads; "npgated-threads":
    # npgated.parallel's --threads threads, BLAS one per call
    parallel.use_threads(spec["threads"] if spec["kind"] == "npgated-threads" else 1)
    result["npgated_threads"] = parallel.threads()
    from npgated.optim import SGD, clip_grads  # noqa: PLC0415

    b = load_batches(spec)
    cls = BetterRnnlm if spec["model"] == "BetterRnnlm" else Rnnlm
    model = cls(**spec["model_kwargs"], seed=0, dtype=np.float32)
    optimizer = SGD(lr=spec["lr"])
    max_norm = spec["max_grad_norm"]
    result["num_params"] = model.num_params()
    result["rss_after_setup_mib"] = rss_mib()
    losses = []

    def train_step(k):
        j = k % len(b["train_xs"])
        model.zero_grads()
        loss = model.forward(b["train_xs"][j], b["train_ts"][j])
        model.backward()
        if max_norm > 0:
            clip_grads(model.grads, max_norm)
        optimizer.update(model.params, model.grads)
        losses.append(loss)

    def eval_step(k):
        j = k % len(b["eval_xs"])
        losses.append(model.forward(b["eval_xs"][j], b["eval_ts"][j]))

    if spec["kind"] == "profile":
        return run_profile(spec, result, model, train_step)
    tokens = spec["N"] * spec["T"]
    model.train()
    result["train"] = time_runs(
        train_step, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens
    )
    result["rss_after_train_mib"] = rss_mib()
    dtypes = {f"loss:{getattr(losses[-1], 'dtype', type(losses[-1]).__name__)}"}
    train_losses, losses[:] = [float(x) for x in losses], []
    model.eval()
    model.reset_state()
    result["eval"] = time_runs(eval_step, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens)
    dtypes |= {f"eval loss:{getattr(losses[-1], 'dtype', type(losses[-1]).__name__)}"}
    dtypes |= {str(p.dtype) for p in model.params} | {str(g.dtype) for g in model.grads}
    result["dtypes"] = sorted(dtypes)
    # The model's peak memory, before the GEMM-only arrays below add their own.
    result["peak_rss_mib"] = rss_mib()
    parallel.use_threads(1)  # the GEMM-only steps: plain NumPy calls, BLAS on --threads threads
    gemm_train, gemm_eval = gemm_only_steps(spec)
    result["gemm_only_train"] = time_runs(
        gemm_train, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens
    )
    result["gemm_only_eval"] = time_runs(
        gemm_eval, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens
    )
    result["loss_first_last"] = [train_losses[0], train_losses[-1]]
    result["eval_loss_mean"] = float(np.mean([float(x) for x in losses]))


def _load_torch_reference():
    """``benchmarks/torch_reference.py`` as a module (benchmarks/ is not a package)."""
    loader = importlib.util.spec_from_file_location("torch_reference", HERE / "torch_reference.py")
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return module


def _child_torch(spec, result):
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415

    torch_reference = _load_torch_reference()

    torch.set_num_threads(spec["threads"])
    result["torch_version"] = torch.__version__
    result["torch_threads"] = torch.get_num_threads()
    b = {k: torch.from_numpy(v.astype(np.int64)) for k, v in load_batches(spec).items()}
    model = torch_reference.build(spec["model_kwargs"], seed=0)
    trainer = torch_reference.TorchTrainer(model, spec["lr"], spec["max_grad_norm"])
    result["num_params"] = sum(p.numel() for p in model.parameters())
    result["rss_after_setup_mib"] = rss_mib()
    losses = []

    def train_step(k):
        j = k % len(b["train_xs"])
        losses.append(trainer.train_step(b["train_xs"][j], b["train_ts"][j]))

    def eval_step(k):
        j = k % len(b["eval_xs"])
        losses.append(trainer.eval_step(b["eval_xs"][j], b["eval_ts"][j]))

    tokens = spec["N"] * spec["T"]
    result["train"] = time_runs(
        train_step, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens
    )
    result["rss_after_train_mib"] = rss_mib()
    train_losses, losses[:] = [float(x) for x in losses], []
    model.reset_state()
    result["eval"] = time_runs(eval_step, 0, spec["warmup"], spec["iters"], spec["repeats"], tokens)
    result["dtypes"] = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters()})
    result["loss_first_last"] = [train_losses[0], train_losses[-1]]
    result["eval_loss_mean"] = float(np.mean([float(x) for x in losses]))


TORCH_KINDS = ("gemm-torch", "torch")


CHILDREN = {
    "gemm-numpy": child_gemm_numpy,
    "gemm-torch": child_gemm_torch,
    "npgated": _child_npgated,
    "npgated-threads": _child_npgated,
    "profile": _child_npgated,
    "torch": _child_torch,
}


def child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = {
        "kind": spec["kind"],
        "pid": os.getpid(),
        "env": {v: os.environ.get(v) for v in OPENBLAS_VARS + THREAD_VARS},
    }
    code = 0
    try:
        if spec.get("keep_freed_memory", True) and spec["kind"] not in TORCH_KINDS:
            # npgated as its fit and command line run it. PyTorch keeps glibc's defaults:
            # these settings made its training ~10 % slower here (see the module docstring).
            from npgated import allocator  # noqa: PLC0415

            result["keep_freed_memory"] = allocator.keep_freed_memory()
        CHILDREN[spec["kind"]](spec, result)
    except Exception:  # noqa: BLE001 (reported to the parent, which goes on)
        result["error"] = traceback.format_exc(limit=8)
        code = 1
    result.setdefault("peak_rss_mib", rss_mib())
    result["threadpool"] = threadpool_info()
    Path(spec["result"]).write_text(json.dumps(result, indent=1))
    return code
