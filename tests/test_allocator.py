"""npgated.allocator: glibc malloc settings that keep freed memory for the next step."""

import platform
import subprocess
import sys
import textwrap

import pytest

from npgated import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mmap_threshold=0), "mmap_threshold must be between 1 and"),
        (dict(mmap_threshold=allocator.MAX_MMAP_THRESHOLD + 1), "32 MiB"),
        (dict(mmap_threshold=1.5), "integer number of bytes"),
        (dict(trim_threshold=-1), "trim_threshold must be between 0 and"),
        (dict(trim_threshold=True), "integer number of bytes"),
    ],
)
def test_bad_thresholds_are_refused_with_the_range(kwargs, match):
    with pytest.raises(ValueError, match=match):
        allocator.keep_freed_memory(**kwargs)


def test_returns_whether_the_settings_apply():
    assert allocator.keep_freed_memory() is GLIBC


# One training step of the book-better model allocates and frees arrays of 1.8 to 28 MB; with
# glibc's adaptive defaults some are unmapped on free and faulted in again on the next step.
_STEPS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from npgated import allocator
    from npgated.models.rnnlm import BetterRnnlm
    if sys.argv[1] == "keep":
        assert allocator.keep_freed_memory()
    m = BetterRnnlm(vocab_size=10000, wordvec_size=650, hidden_size=650, seed=0,
                    dtype=np.float32)
    rng = np.random.default_rng(0)
    xs, ts = rng.integers(0, 10000, (2, 20, 35))
    faults = []
    for k in range(4):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        m.zero_grads(); m.forward(xs, ts); m.backward()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(max(faults[2:]))
""")


def _steady_state_faults(mode):
    out = subprocess.run(
        [sys.executable, "-c", _STEPS, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt settings exist only in glibc")
def test_training_steps_stop_faulting_in_freed_memory():
    kept = _steady_state_faults("keep")
    default = _steady_state_faults("default")
    # A step touches ~60 MB of arrays (15,000 pages): "no faults" leaves room for noise.
    assert kept < 200, f"{kept} page faults per step with keep_freed_memory ({default} without)"
