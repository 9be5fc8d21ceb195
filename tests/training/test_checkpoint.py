import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from npgated import backend
from npgated.models.rnnlm import BetterRnnlm, Rnnlm
from npgated.optim import Adam
from npgated.training.checkpoint import CheckpointError, load_checkpoint, restore, save_checkpoint


def _trained(seed=0, **kw):
    model = BetterRnnlm(17, 8, 8, num_layers=2, dropout_ratio=0.3, seed=seed, **kw)
    opt = Adam(lr=0.01)
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 17, (2, 5)), rng.integers(0, 17, (2, 5))
    for _ in range(2):
        model.zero_grads()
        model.forward(xs, ts)
        model.backward()
        opt.update(model.params, model.grads)
    return model, opt


def test_roundtrip_params_optimizer_meta(tmp_path, xp_name):
    model, opt = _trained()
    path = save_checkpoint(
        tmp_path / "c.npz", model, opt, meta={"epoch": 3, "vocab_checksum": "abc"}
    )
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 3 and ckpt.meta["config"]["model"] == "BetterRnnlm"
    assert ckpt.meta["npgated_version"]
    fresh, fresh_opt = BetterRnnlm(17, 8, 8, num_layers=2, dropout_ratio=0.3, seed=9), Adam(lr=0.01)
    restore(fresh, ckpt, fresh_opt, vocab_checksum="abc")
    for (n, p, _), (_, q, _) in zip(model.named_params(), fresh.named_params()):
        np.testing.assert_array_equal(backend.to_cpu(p), backend.to_cpu(q), err_msg=n)
    a, b = opt.state_dict(), fresh_opt.state_dict()
    assert a["t"] == b["t"]
    for slot in a["slots"]:
        for x, y in zip(a["slots"][slot], b["slots"][slot]):
            np.testing.assert_array_equal(backend.to_cpu(x), backend.to_cpu(y))
    with np.load(path, allow_pickle=False) as data:  # plain arrays, no pickles
        assert "params/embed.W" in data.files and "optim/embed.W/m" in data.files


def test_refuses_non_finite_and_keeps_previous(tmp_path):
    model, _ = _trained()
    path = save_checkpoint(tmp_path / "c.npz", model)
    before = path.read_bytes()
    model.params[1][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="non-finite values in params/lstm1.Wx"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_truncated_and_corrupted_files_are_refused(tmp_path):
    model, _ = _trained()
    path = save_checkpoint(tmp_path / "c.npz", model)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an npgated checkpoint"):
        load_checkpoint(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")


def test_wrong_model_and_wrong_vocabulary_are_refused(tmp_path):
    model, _ = _trained()
    ckpt = load_checkpoint(
        save_checkpoint(tmp_path / "c.npz", model, meta={"vocab_checksum": "aaaa" * 16})
    )
    with pytest.raises(CheckpointError, match="hidden_size: checkpoint 8 vs model 12"):
        restore(BetterRnnlm(17, 12, 12, num_layers=2, dropout_ratio=0.3), ckpt)
    with pytest.raises(CheckpointError, match="cell: checkpoint 'lstm' vs model 'gru'"):
        restore(BetterRnnlm(17, 8, 8, num_layers=2, dropout_ratio=0.3, cell="gru"), ckpt)
    with pytest.raises(CheckpointError, match="different vocabulary"):
        restore(model, ckpt, vocab_checksum="bbbb" * 16)


def test_shape_mismatch_names_the_parameter(tmp_path):
    model = Rnnlm(17, 8, 8, seed=0)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.npz", model))
    ckpt.meta["config"] = None  # skip the config check: reach the shape check
    ckpt.params["lstm1.Wh"] = np.zeros((8, 16), dtype=np.float32)
    with pytest.raises(
        CheckpointError, match=r"lstm1.Wh: shape \(8, 16\) does not match the model's \(8, 32\)"
    ):
        restore(model, ckpt)
    del ckpt.params["lstm1.Wh"]
    with pytest.raises(CheckpointError, match=r"missing \['lstm1.Wh'\]"):
        restore(model, ckpt)


def test_kill_during_save_leaves_previous_checkpoint(tmp_path):
    """SIGKILL a process while it writes a large checkpoint over a good one."""
    good = Rnnlm(50, 4, 4, seed=0)
    path = save_checkpoint(tmp_path / "c.npz", good)
    before = path.read_bytes()
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from npgated.models.rnnlm import Rnnlm
        from npgated.training.checkpoint import save_checkpoint
        big = Rnnlm(200000, 64, 64, seed=1)      # ~100 MB of parameters
        print("ready", flush=True)
        while True:
            save_checkpoint({str(path)!r}, big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        # wait until a temporary file is being written, then kill the writer mid-way
        deadline = time.time() + 60
        while time.time() < deadline and not any(
            p.name.endswith(".tmp") for p in tmp_path.iterdir()
        ):
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    ckpt = load_checkpoint(path)  # whatever is in place is complete and readable
    assert path.read_bytes() == before or ckpt.params["embed.W"].shape == (200000, 64)


def test_checkpoint_from_before_the_regularizers_still_loads(tmp_path):
    """Configs written before recurrent_dropout, ..., tar existed: they match the defaults."""
    model, _ = _trained()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "c.npz", model))
    new_keys = ("recurrent_dropout", "weight_drop", "embedding_dropout", "ar", "tar")
    assert all(k in ckpt.meta["config"] for k in new_keys)  # carried by new checkpoints
    for k in new_keys:
        del ckpt.meta["config"][k]
    fresh = BetterRnnlm(17, 8, 8, num_layers=2, dropout_ratio=0.3, seed=5)
    restore(fresh, ckpt)
    np.testing.assert_array_equal(backend.to_cpu(fresh.params[0]), backend.to_cpu(model.params[0]))
    regularized = BetterRnnlm(17, 8, 8, num_layers=2, dropout_ratio=0.3, ar=1.0)
    with pytest.raises(CheckpointError, match="ar: checkpoint 0.0 vs model 1.0"):
        restore(regularized, ckpt)
