"""The `>>>` examples in the docstrings of convkit run as tests, and must pass (issue 9).

Every module of the package is found by walking it, so a new module's examples run without registering it.
Each docstring with examples is one test, named after it (`-k conv_output_size` picks one). It runs:

* with the module's own globals plus `torch`, `nn`, `F`, `np`, `convkit` and the helper `image_folder`,
  which writes a tiny folder of PNGs, one subfolder per class (`NAMESPACE`); examples naming `tiny_run`
  also get a run folder trained for one epoch on 128 images, shared by the whole session (about 6 s);
* in a fresh temporary working directory, so examples that write files (`save_animation(g, "conv.gif")`)
  leave nothing behind;
* with doctest's ELLIPSIS and NORMALIZE_WHITESPACE, after `torch.manual_seed(0)` (tests/conftest.py).

Alone: `python -m pytest -q tests/test_doctests.py`.
"""

import doctest
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import convkit

# Being rewritten for issue 9 by other helpers; remove an entry when its examples run.
# A name excludes the module and, for a package, everything under it.
PENDING: set[str] = set()

# Importing `python -m convkit`'s entry point runs the command line and exits; it holds no examples.
NOT_IMPORTABLE = {"convkit.__main__"}


def image_folder(root: str = "flowers", classes=("daisy", "rose"), per_class: int = 3, size=(24, 32),
                 mode: str = "RGB") -> Path:
    """Writes a small image folder, one subfolder of `per_class` PNGs (height x width `size`) per class.

    The data examples' stand-in for a folder of photos; every image has its own shade of grey.
    """
    root = Path(root)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shade = 30 * (label * per_class + i)
            Image.new("L", (size[1], size[0]), shade).convert(mode).save(root / name / f"{i:03}.png")
    return root


NAMESPACE = {"torch": torch, "nn": nn, "F": F, "np": np, "convkit": convkit, "image_folder": image_folder}

OPTIONFLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _excluded(name: str) -> bool:
    return name in NOT_IMPORTABLE or any(name == p or name.startswith(p + ".") for p in PENDING)


def module_names() -> list[str]:
    """convkit and every module under it, sorted, less the excluded ones (PENDING, NOT_IMPORTABLE)."""
    found = ["convkit", *(m.name for m in pkgutil.walk_packages(convkit.__path__, "convkit."))]
    return sorted(n for n in found if not _excluded(n))


def docstring_tests() -> list[doctest.DocTest]:
    """The docstrings with examples of every module, each module's own objects only (no re-exports)."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in module_names():
        tests += [t for t in finder.find(importlib.import_module(name)) if t.examples]
    return sorted(tests, key=lambda t: t.name)


TESTS = docstring_tests()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder: fastcnn trained one epoch on 128 shipped images, shared by the examples naming `tiny_run`."""
    result = convkit.train(epochs=1, limit=128, test_limit=64, batch_size=64, quiet=True, seed=0,
                           threads=torch.get_num_threads(), runs_dir=str(tmp_path_factory.mktemp("runs")),
                           name="fastcnn-tiny")
    return Path(result.run_dir)


def _uses(test: doctest.DocTest, name: str) -> bool:
    return any(name in example.source for example in test.examples)


@pytest.mark.parametrize("test", TESTS, ids=[t.name for t in TESTS])
def test_docstring_examples(test, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    names = dict(NAMESPACE)
    if _uses(test, "tiny_run"):  # trained only when an example asks for it, once per session
        names["tiny_run"] = request.getfixturevalue("tiny_run")
    fresh = doctest.DocTest(test.examples, {**names, **test.globs}, test.name, test.filename, test.lineno,
                            test.docstring)
    runner = doctest.DocTestRunner(optionflags=OPTIONFLAGS)
    report: list[str] = []
    result = runner.run(fresh, out=report.append)
    if result.failed:
        pytest.fail("".join(report), pytrace=False)


def test_every_module_is_searched():
    """Every .py file of the package is searched but the excluded ones, and every excluded name still exists."""
    root = Path(convkit.__file__).parent
    on_disk = {".".join(("convkit", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
               for p in root.rglob("*.py")}
    assert set(module_names()) == {n for n in on_disk if not _excluded(n)}
    stale = [p for p in PENDING | NOT_IMPORTABLE if not any(n == p or n.startswith(p + ".") for n in on_disk)]
    assert not stale, f"excluded modules that no longer exist: {stale}"
