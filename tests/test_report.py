"""`convkit report`: the HTML page of a run, parsed with html.parser and opened in a real headless Chromium.

One small run (2 epochs, 512 images) is trained once for the module; variants of it (a damaged copy, a
copy whose test data is gone) are copied from it without the resume file.
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from PIL import Image

from convkit.report import ReportError, build_report
from convkit.train import load_checkpoint
from convkit.train.runfolder import read_metrics

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 900}


class Page(HTMLParser):
    """The parts of the report a test reads: images, elements with data-* numbers, links, scripts."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.images: list[dict] = []
        self.metrics: list[dict] = []  # attributes of each [data-metric] element, plus its "text"
        self.cams: list[dict] = []
        self.layers: list[dict] = []
        self.notes: list[str] = []
        self.tags: set[str] = set()
        self.h1 = ""
        self._open: dict | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "img":
            self.images.append(a)
        if tag == "figure" and "cam" in (a.get("class") or "").split():
            self.cams.append(a)
        if "data-params" in a:
            self.layers.append(a)
        if "data-metric" in a or tag == "h1" or (tag == "p" and a.get("class") == "note"):
            self._open = {**a, "tag": tag, "text": ""}

    def handle_data(self, data):
        if self._open is not None:
            self._open["text"] += data

    def handle_endtag(self, tag):
        if self._open is not None and tag == self._open["tag"]:
            item, self._open = self._open, None
            if tag == "h1":
                self.h1 = item["text"]
            elif "data-metric" in item:
                self.metrics.append(item)
            else:
                self.notes.append(item["text"])

    def metric(self, name: str, source: str) -> dict:
        found = [m for m in self.metrics if m["data-metric"] == name and m["data-source"] == source]
        assert len(found) == 1, (name, source, found)
        return found[0]


def png_size(src: str) -> tuple[int, int]:
    """A data: URI -> the size of the PNG it holds (fails unless it is a complete, decodable PNG)."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:60]
    data = base64.b64decode(src[len(prefix):], validate=True)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


def shown_number(text: str) -> tuple[float, float]:
    """'49.22%' -> (0.4922, 0.00005): the value a cell shows and half its last digit, on the file's scale."""
    text = text.strip().replace(",", "")
    number = re.match(r"-?[\d.]+(e-?\d+)?", text).group(0)
    decimals = len(number.split(".")[1].split("e")[0]) if "." in number else 0
    scale = 100 if text.endswith("%") else 1
    return float(number) / scale, 0.5 * 10 ** -decimals / scale


# --- fixtures ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from convkit.train import train

    runs = tmp_path_factory.mktemp("runs")
    return train(epochs=2, limit=512, test_limit=256, runs_dir=str(runs), name="report-run", quiet=True).run_dir


@pytest.fixture(scope="module")
def report(run_dir) -> tuple[Path, str, Page]:
    path = build_report(run_dir)
    text = path.read_text(encoding="utf-8")
    return path, text, Page(text)


def copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("resume.safetensors", "report.html"))
    return dest


# --- the page ------------------------------------------------------------------------------------------------

def test_page_is_self_contained(report, run_dir):
    path, text, page = report
    assert path == run_dir / "report.html"
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]  # written atomically, nothing left
    assert not re.search(r"https?://", text, re.I)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert not re.search(r"\b(src|href)=\"(?!data:image/png;base64,)", text)  # only embedded images
    assert page.notes == []  # a complete run: nothing missing, nothing redrawn
    assert page.h1 == "report-run"
    sizes = {img["alt"]: png_size(img["src"]) for img in page.images}
    assert {"curves", "confusion", "first-layer filters"} <= set(sizes)
    with Image.open(run_dir / "curves.png") as curves:
        assert sizes["curves"] == curves.size  # embedded as it is, not redrawn
    assert len(page.images) == 3 + 2 * 6  # plots, filters, and an image and its Grad-CAM for 6 test images


def test_numbers_match_metrics_csv_and_checkpoint(report, run_dir):
    _, _, page = report
    rows = read_metrics(run_dir / "metrics.csv")
    cells = [m for m in page.metrics if m["data-source"] == "epoch"]
    assert len(cells) == len(rows) * len(rows[0])  # every column of every epoch
    for cell in cells:
        expected = rows[int(cell["data-epoch"]) - 1][cell["data-metric"]]
        assert float(cell["data-value"]) == expected, cell
        value, tolerance = shown_number(cell["text"])
        assert abs(value - expected) <= tolerance * 1.001 + 1e-12, cell
    for key in ("test_acc", "train_acc", "elapsed_s"):
        assert float(page.metric(key, "final")["data-value"]) == rows[-1][key]
    best = load_checkpoint(run_dir).meta["metrics"]  # full precision; metrics.csv keeps 6 digits
    for key in ("test_acc", "test_top5", "test_loss"):
        cell = page.metric(key, "checkpoint")
        assert float(cell["data-value"]) == best[key]
        value, tolerance = shown_number(cell["text"])
        assert abs(value - best[key]) <= tolerance * 1.001
    assert best["test_acc"] == pytest.approx(max(r["test_acc"] for r in rows), rel=1e-5)


def test_summary_totals_match_the_model(report, run_dir):
    _, _, page = report
    model = load_checkpoint(run_dir).model
    total = sum(p.numel() for p in model.parameters())
    assert int(page.metric("parameters", "summary")["data-value"]) == total
    assert int(page.metric("parameters", "model")["data-value"]) == total
    assert shown_number(page.metric("parameters", "summary")["text"])[0] == total
    assert sum(int(r["data-params"]) for r in page.layers) == total
    assert int(page.metric("macs", "summary")["data-value"]) > 0


def test_gradcams_are_the_first_correct_and_wrong_test_images(report, run_dir):
    from convkit.data import load_dataset
    from convkit.train.evaluate import predict_logits

    _, _, page = report
    ckpt = load_checkpoint(run_dir)
    test = load_dataset("default", "test").subset(range(256))
    predicted = predict_logits(ckpt.model, test.images, ckpt.mean, ckpt.std, tta=bool(ckpt.meta["tta"])).argmax(1)
    correct = (predicted == test.labels).tolist()
    right = [i for i, ok in enumerate(correct) if ok][:3]
    wrong = [i for i, ok in enumerate(correct) if not ok][:3]
    assert [int(c["data-index"]) for c in page.cams] == right + wrong
    for cam in page.cams:
        i = int(cam["data-index"])
        assert cam["data-true"] == ckpt.classes[int(test.labels[i])]
        assert cam["data-predicted"] == ckpt.classes[int(predicted[i])]
        assert ("wrong" in cam["class"]) == (i in wrong)
        assert 0 < float(cam["data-probability"]) <= 1
    accuracy = float(page.metric("test_acc", "recomputed")["data-value"])
    assert accuracy == pytest.approx(sum(correct) / len(correct))


def test_missing_plots_are_redrawn_and_text_is_escaped(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "a&b <i>run")
    (run / "curves.png").unlink()
    (run / "confusion.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")  # damaged
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["name"] = "<script>alert('x')</script>"
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    out = build_report(run, tmp_path / "out" / "page.html", gradcams=0)
    text = out.read_text()
    page = Page(text)
    assert "<script" not in text and "<i>run" not in text
    assert "&lt;script&gt;" in text and page.h1 == "a&b <i>run"
    assert any("curves.png is missing" in n for n in page.notes)
    assert any("confusion.png is missing" in n for n in page.notes)
    assert {img["alt"] for img in page.images} == {"curves", "confusion", "first-layer filters"}
    for img in page.images:
        png_size(img["src"])
    assert not (run / "curves.png").exists()  # the run folder is left as it was


def test_unavailable_test_data_leaves_a_note(run_dir, tmp_path):
    run = copy_run(run_dir, tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"] = str(tmp_path / "gone")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.warns(RuntimeWarning, match="Grad-CAM left out"):
        page = Page(build_report(run).read_text())
    assert page.cams == []
    assert any("test data not available" in n and "gone" in n for n in page.notes)
    assert {"curves", "confusion"} <= {img["alt"] for img in page.images}


def test_not_a_run_folder(run_dir, tmp_path):
    with pytest.raises(ReportError, match="no such run folder"):
        build_report(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ReportError, match=r"not a run folder: no best.safetensors or last.safetensors.*notes.txt"):
        build_report(tmp_path)
    run = copy_run(run_dir, tmp_path / "run")
    (run / "metrics.csv").unlink()
    with pytest.raises(ReportError, match="metrics.csv is missing"):
        build_report(run)


# --- the command ---------------------------------------------------------------------------------------------

def test_cli_report(run_dir, tmp_path, capsys):
    from convkit.cli.report_cmds import register
    from convkit.errors import ConvkitError

    parser = argparse.ArgumentParser(prog="convkit")
    register(parser.add_subparsers(dest="verb"))
    out = tmp_path / "r.html"
    args = parser.parse_args(["report", str(run_dir), "--out", str(out), "--gradcams", "2"])
    assert args.run(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(Page(out.read_text()).cams) == 2
    args = parser.parse_args(["report", str(tmp_path)])
    with pytest.raises(ConvkitError, match="not a run folder"):
        args.run(args)
    assert "convkit report runs/" in parser._subparsers._group_actions[0].choices["report"].format_help()


# --- in a real browser ---------------------------------------------------------------------------------------

def _browser() -> tuple[str | None, str]:
    """Chromium's path, or None and why not."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return None, "playwright is not installed (pip install playwright; no `playwright install` needed)"
    exe = os.environ.get("CONVKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        return None, "no chromium on PATH (apt-get install chromium)"
    return exe, ""


def test_report_in_headless_chromium(report, run_dir, tmp_path):
    exe, why = _browser()
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    path = report[0]
    shot = tmp_path / "report.png"
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(path.as_uri(), wait_until="load")
            images = page.evaluate("[...document.images].map(i => ({alt: i.alt, complete: i.complete, "
                                   "width: i.naturalWidth, height: i.naturalHeight}))")
            cells = page.evaluate("[...document.querySelectorAll('[data-metric]')].map(e => "
                                  "({metric: e.dataset.metric, source: e.dataset.source, epoch: e.dataset.epoch, "
                                  "text: e.innerText}))")
            page.screenshot(path=str(shot))
        finally:
            browser.close()

    assert len(images) == 15
    assert all(i["complete"] and i["width"] > 0 and i["height"] > 0 for i in images), images
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    rows = read_metrics(run_dir / "metrics.csv")
    shown = [c for c in cells if c["source"] == "epoch"]
    assert len(shown) == len(rows) * len(rows[0])
    for cell in shown:
        expected = rows[int(cell["epoch"]) - 1][cell["metric"]]
        value, tolerance = shown_number(cell["text"])
        assert abs(value - expected) <= tolerance * 1.001 + 1e-12, cell
    best = load_checkpoint(run_dir).meta["metrics"]
    text = next(c["text"] for c in cells if c["metric"] == "test_acc" and c["source"] == "checkpoint")
    assert math.isclose(shown_number(text)[0], round(best["test_acc"], 4), abs_tol=1e-9)

    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # text, plots and cards, not a blank page
        assert max(n for n, _ in colours) < 0.9 * im.width * im.height
    if os.environ.get("CONVKIT_SAVE_SCREENSHOT"):
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / "report_screenshot.png")



def test_the_report_is_its_own_package_above_explain():
    import convkit.explain
    import convkit.report

    assert convkit.report.build_report is build_report and convkit.report.ReportError is ReportError
    assert "build_report" not in convkit.explain.__all__ and not hasattr(convkit.explain, "build_report")
    assert "ReportError" not in convkit.explain.__all__
