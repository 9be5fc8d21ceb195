"""npgated/book/shim.py: the folder that answers the book's layer imports with npgated.book."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from npgated.book import shim

ROOT = Path(__file__).resolve().parents[2]


def _fake_book(root: Path) -> Path:
    """The two modules of the book's common/ that the shim's time_layers reads, and np."""
    common = root / "book" / "common"
    common.mkdir(parents=True)
    (common / "__init__.py").write_text("")
    (common / "np.py").write_text("import numpy as np\nBOOKS_NP = True\n")
    (common / "layers.py").write_text("from common.np import *\nclass MatMul:\n    pass\n")
    (common / "functions.py").write_text("def sigmoid(x):\n    return x\nsoftmax = sigmoid\n")
    (common / "time_layers.py").write_text("raise RuntimeError('the book own layers')\n")
    (common / "trainer.py").write_text("WHERE = 'book'\n")
    return root / "book"


def _python(code, pythonpath, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, [*pythonpath, ROOT])))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_shim_answers_the_layer_imports_and_leaves_the_rest_to_the_book(tmp_path):
    folder = shim.write_shim(tmp_path / "shim")
    assert folder == (tmp_path / "shim").resolve()
    book = _fake_book(tmp_path)
    out = _python(
        "from common.time_layers import *\n"
        "import common.trainer, common.np\n"
        "print(TimeLSTM.__module__, MatMul.__module__, common.trainer.WHERE, np is common.np.np)\n"
        "from ch08.attention_layer import TimeAttention\n"
        "print(TimeAttention.__module__)\n",
        [folder, book],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "npgated.book.time_layers",
        "common.layers",
        "book",
        "True",
        "npgated.layers.attention",
    ]


def test_shim_without_the_book_says_what_to_do(tmp_path):
    folder = shim.write_shim(tmp_path / "shim")
    out = _python("import common.time_layers", [folder], tmp_path)
    assert out.returncode != 0
    assert "the book's common/ folder is not on sys.path" in out.stderr


def test_main_prints_the_folder_or_one_line_why_not(tmp_path, capsys):
    assert shim.main([str(tmp_path / "s")]) == 0
    assert capsys.readouterr().out.strip() == str((tmp_path / "s").resolve())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert shim.main([str(blocker / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("npgated.book.shim: cannot write")
