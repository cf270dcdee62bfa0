"""The page of `convkit serve` (src/convkit/serve/page/index.html) in a real headless Chromium, against real
`convkit serve` processes.

Two servers for the module, started together: a classifier (fastcnn, one epoch on 128 shipped images; with a
token, so the page's token field is used, and a 64 KB upload limit, so a 413 is cheap) and a tiny U-Net.
Truth: the server's own JSON for the same file, fetched with httpx; the mask's pixels counted in the page's canvas
against the answer's areas. Every request the browser makes must stay on the server (127.0.0.1), data: or blob:.

CONVKIT_SCREENSHOTS=1 trains the classifier well enough to be right instead (2 epochs on the 6,000 shipped images,
about a minute) and writes docs/serve_page.png; the screenshots always go to tmp_path (the segmenter's is of a
model that has seen 16 images: not a picture for the README).
"""

from __future__ import annotations

import io
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import convkit
from convkit.data import load_default

pytestmark = pytest.mark.slow  # real `convkit serve` processes and a real browser: about 30 s on 2 shared cores

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "page-test-token"
MAX_BODY_MB = 0.0625  # 64 KB: a Fashion-MNIST PNG is under 1 KB
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 760}
SCREENSHOTS = os.environ.get("CONVKIT_SCREENSHOTS") == "1"
TIMEOUT_MS = 60_000  # the first answer includes the model's warm-up on a busy machine


# --- servers ------------------------------------------------------------------------------------------------

class Server:
    """A `convkit serve` process on a free port, started from this checkout's sources; `ready()` waits for it."""

    def __init__(self, source: Path, *args: str, log: Path):
        env = dict(os.environ, PYTHONPATH=str(Path(convkit.__file__).parents[1]))
        env.pop("CONVKIT_SERVE_TOKEN", None)
        self.log, self.url = log, ""
        self._stderr = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "convkit", "serve", str(source), "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env)
        self._line: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: self._line.put(self.process.stdout.readline()), daemon=True).start()

    def ready(self) -> Server:
        if not self.url:
            try:
                line = self._line.get(timeout=120)
            except queue.Empty:
                line = ""
            if " on http://" not in line:
                self.stop()
                raise RuntimeError(f"convkit serve did not start: {line!r}\n{self.log.read_text()[-3000:]}")
            self.url = line.rsplit(" on ", 1)[1].strip().rstrip("/")
        return self

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both servers, started together (their imports overlap): a classifier with a token, a segmenter without."""
    runs = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    if SCREENSHOTS:  # right often enough for a README picture (about a minute on 2 cores)
        cls = convkit.train(epochs=2, quiet=True, seed=0, threads=threads, runs_dir=str(runs), name="fastcnn")
    else:
        cls = convkit.train(epochs=1, limit=128, test_limit=64, batch_size=64, quiet=True, seed=0, threads=threads,
                            runs_dir=str(runs), name="fastcnn")
    seg = convkit.train(task="segment", model="unet", model_kwargs={"depth": 2, "width": 8}, epochs=1, limit=16,
                        test_limit=4, batch_size=8, quiet=True, seed=0, threads=1, runs_dir=str(runs), name="unet")
    started = {"classifier": Server(cls.run_dir, "--token", TOKEN, "--max-body-mb", str(MAX_BODY_MB),
                                    log=runs / "classifier.log"),
               "segmenter": Server(seg.run_dir, log=runs / "segmenter.log")}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def classifier(servers) -> Server:
    return servers["classifier"].ready()


@pytest.fixture(scope="module")
def segmenter(servers) -> Server:
    return servers["segmenter"].ready()


@pytest.fixture(scope="module")
def browser():
    exe = os.environ.get("CONVKIT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    why = "no chromium on PATH (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe, why = None, "playwright is not installed (pip install playwright; no `playwright install` needed)"
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
    playwright = sync_playwright().start()
    chromium = playwright.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="module")
def item_png(tmp_path_factory) -> Path:
    """A real Fashion-MNIST test item as a PNG: an ankle boot (the first of its class in the shipped test split)."""
    test = load_default("test")
    index = next(i for i in range(len(test)) if test.classes[int(test[i][1])] == "Ankle boot")
    path = tmp_path_factory.mktemp("images") / "ankle-boot.png"
    Image.fromarray(test[index][0][0].numpy()).save(path)
    return path


class Browsing:
    """A fresh page on a server: what it requested and the script errors it raised."""

    def __init__(self, browser, server: Server):
        self.server = server
        self.context = browser.new_context(viewport=VIEWPORT)  # no bypass_csp: the server's policy applies
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(server.url + "/", wait_until="load")

    def state(self, *states: str):
        self.page.wait_for_selector(", ".join(f"body[data-state={s}]" for s in states), state="attached")

    def upload(self, files, count: int):
        self.page.set_input_files("#file", files)
        self.page.wait_for_selector(f"#result[data-count='{count}']", state="attached")

    def enter_token(self):
        self.state("token")
        assert self.page.is_visible("#token-form")
        self.page.fill("#token", TOKEN)
        self.page.press("#token", "Enter")
        self.state("ready")

    def left_the_server(self) -> list[str]:
        return [u for u in self.requests if not u.startswith((self.server.url + "/", "data:", "blob:"))]

    def close(self):
        self.context.close()


@pytest.fixture
def browse(browser):
    opened: list[Browsing] = []

    def open_page(server):
        opened.append(Browsing(browser, server))
        return opened[-1]

    yield open_page
    for b in opened:
        b.close()


def screenshot(page, tmp_path: Path, name: str, docs: bool = False) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot))
    with Image.open(shot) as im:
        assert im.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100  # text, bars and pictures, not a blank page
    if SCREENSHOTS and docs:
        (ROOT / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, ROOT / "docs" / name)
    return shot


# --- the classifier -----------------------------------------------------------------------------------------

def test_the_page_asks_for_the_token_then_shows_what_the_api_answers(classifier, browse, item_png, tmp_path):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    meta = httpx.get(classifier.url + "/model", headers=auth, timeout=30).json()
    b = browse(classifier)
    b.enter_token()
    page = b.page
    assert page.get_attribute("#error", "hidden") is not None
    assert page.is_hidden("#token-form")
    assert page.inner_text("[data-fact=name] dd") == meta["name"]
    assert page.inner_text("[data-fact=backend] dd") == "pytorch"
    assert "classification" in page.inner_text("[data-fact=task] dd")
    assert page.inner_text("[data-fact=input] dd") == "1 × 28 × 28"
    assert page.eval_on_selector_all("#classes li", "els => els.map(e => e.textContent)") == meta["classes"]

    b.upload(str(item_png), 1)
    with open(item_png, "rb") as f:
        api = httpx.post(classifier.url + "/predict", params={"top": 5, "gradcam": "true"}, headers=auth,
                         files={"file": (item_png.name, f, "image/png")}, timeout=60).json()
    shown = page.eval_on_selector_all("#predictions li", "els => els.map(e => ({cls: e.dataset.class, "
                                      "p: Number(e.dataset.probability), pct: e.querySelector('.pct').textContent}))")
    assert [s["cls"] for s in shown] == [p["class"] for p in api["predictions"]]
    assert [s["p"] for s in shown] == [p["probability"] for p in api["predictions"]]
    assert [s["pct"] for s in shown] == [f"{100 * p['probability']:.1f}%" for p in api["predictions"]]
    cam = page.eval_on_selector("#gradcam", "i => ({complete: i.complete, w: i.naturalWidth, h: i.naturalHeight, "
                                            "alt: i.alt})")
    assert cam["complete"] and (cam["w"], cam["h"]) == (api["width"], api["height"]) == (28, 28)
    assert api["gradcam_class"] in cam["alt"]
    preview = page.eval_on_selector("#preview", "i => ({w: i.naturalWidth, alt: i.alt})")
    assert preview["w"] == 28 and item_png.name in preview["alt"]
    assert page.get_attribute("#result", "data-task") == "classification"

    shot = screenshot(page, tmp_path, "serve_page.png", docs=True)
    assert shot.stat().st_size > 10_000
    assert b.left_the_server() == [] and b.errors == []
    assert any(u.startswith(classifier.url + "/predict") for u in b.requests)


def test_server_errors_are_messages_and_the_page_recovers(classifier, browse, item_png):
    b = browse(classifier)
    b.enter_token()
    page = b.page
    png = item_png.read_bytes()
    cases = [  # (upload, status): what the server sniffs, never the name or the type the browser sends
        ({"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text, not an image\n"}, "415"),
        ({"name": "cut.png", "mimeType": "image/png", "buffer": png[: len(png) // 2]}, "422"),
        ({"name": "big.png", "mimeType": "image/png", "buffer": png + bytes(int(MAX_BODY_MB * 2**20))}, "413"),
    ]
    for count, (upload, status) in enumerate(cases, 1):
        b.upload(upload, count)
        assert page.get_attribute("#result", "data-state") == "error"
        assert page.get_attribute("#error", "data-status") == status
        assert page.is_visible("#error") and f"HTTP {status}" in page.inner_text("#error")
    assert "64 KB" in page.inner_text("#error")  # the 413 says what the limit is

    b.upload(str(item_png), len(cases) + 1)
    assert page.get_attribute("#result", "data-state") == "done"
    assert page.is_hidden("#error") and page.eval_on_selector_all("#predictions li", "els => els.length") == 5
    assert b.left_the_server() == [] and b.errors == []


# --- the segmenter ------------------------------------------------------------------------------------------

def test_a_segmenters_mask_and_legend_match_the_api(segmenter, browse, tmp_path):
    from convkit.tasks.detection.scenes import make_scenes

    scenes = make_scenes(1, seed=3, split="test", objects=3)
    buffer = io.BytesIO()
    Image.fromarray(scenes.images[0][0].numpy()).save(buffer, "PNG")
    b = browse(segmenter)  # no token on this server: the page goes straight to the model
    b.state("ready")
    page = b.page
    b.upload({"name": "scene.png", "mimeType": "image/png", "buffer": buffer.getvalue()}, 1)
    api = httpx.post(segmenter.url + "/predict", content=buffer.getvalue(), timeout=60).json()

    legend = page.eval_on_selector_all("#legend li", "els => els.map(e => [e.dataset.class, Number(e.dataset.area)])")
    assert dict(legend) == api["areas"] and len(legend) == len(api["areas"])
    # the mask's drawn pixels: every class but the background (left see-through), at the image's size
    drawn = page.eval_on_selector("#mask", "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, "
                                           "c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) "
                                           "n += d[i] > 0; return [c.width, c.height, n]; }")
    assert drawn[:2] == [api["width"], api["height"]] == [96, 96]
    assert drawn[2] == sum(api["areas"].values()) - api["areas"].get("background", 0)
    page.fill("#opacity", "0.25")
    page.dispatch_event("#opacity", "input")
    assert page.eval_on_selector("#mask", "c => c.style.opacity") == "0.25"
    assert page.eval_on_selector("#segment-image", "i => i.complete && i.naturalWidth") == 96
    screenshot(page, tmp_path, "serve_page_segment.png")
    assert b.left_the_server() == [] and b.errors == []
    assert np.isclose(sum(api["areas"].values()), 96 * 96)
