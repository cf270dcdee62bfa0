"""`convkit report RUN`: one self-contained HTML page per training run.

The page holds what a reader wants from a run without opening five files: the key numbers, the learning
curves and confusion matrix, the per-epoch metrics, the model's layer table (`convkit.summary`), the
first-layer filters, a few Grad-CAMs of test images and the config. Every image is embedded as a
`data:image/png;base64,...` URI and the CSS is inline, so the one file can be mailed, attached to an issue
or opened years later; it references nothing outside itself and runs no JavaScript.

Numbers a program may want to check carry stable attributes: `data-metric` (a metrics.csv column, or
`parameters`, `macs`), `data-source` (`checkpoint`: the checkpoint's metadata; `final`: the last row of
metrics.csv; `epoch`: a row of the per-epoch table, with `data-epoch`; `model`: counted on the model;
`summary`: the totals of the layer table; `recomputed`: the checkpoint re-run on the Grad-CAMs' test set)
and `data-value` (the exact number; the element's text is the rounded, human form). Grad-CAM tiles carry
`data-index`, `data-true`, `data-predicted` and `data-probability`.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from convkit.errors import ConvkitError
from convkit.layers.shapes import format_pair, format_shape
from convkit.train.runfolder import read_metrics
from convkit.utils import YAMLInputError, atomic_write_text, load_yaml

__all__ = ["ReportError", "build_report"]

CHECKPOINTS = ("best.safetensors", "last.safetensors")
THUMB = 128  # CSS pixels of one Grad-CAM tile: 28x28 images are upscaled, large ones shrunk


class ReportError(ValueError, ConvkitError):
    """The folder is not a run folder, or a file the report cannot do without is missing or unreadable."""


@dataclass
class _Run:
    """What the page is built from; `notes` collect what was missing or redrawn, shown in the page."""

    run_dir: Path
    ckpt: object  # convkit.train.Checkpoint
    metrics: list[dict]
    config: dict
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def checkpoint_name(self) -> str:
        return self.ckpt.path.name


# --- entry point ---------------------------------------------------------------------------------------------

def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None, *, test_data=None,
                 gradcams: int = 6, data_dir: str | os.PathLike | None = None) -> Path:
    """Writes one self-contained HTML page about a training run.

    Args:
        run_dir: a run folder of `convkit train` (best.safetensors or last.safetensors, metrics.csv,
            config.yaml, curves.png, confusion.png).
        out: the HTML file (default: `<run_dir>/report.html`); written atomically.
        test_data: the images for the Grad-CAMs (and for the confusion matrix if confusion.png is missing):
            a dataset name or path, or an `ImageTensorDataset` (default: the run's own test set, as its
            config.yaml names it, with its test_limit).
        gradcams: how many test images to explain with Grad-CAM, half correctly and half wrongly
            classified where there are enough of each (0: none, and no test data is loaded unless the
            confusion matrix must be redrawn).
        data_dir: where named datasets are looked for (default: the run's data_dir).

    Returns:
        The path of the page.

    Raises:
        ReportError: not a run folder (the message says what is there), or metrics.csv missing or
            unreadable. Missing plots, test data or explanations do not raise: the page says what is
            missing and why.

    Example:
        >>> path = build_report(tiny_run, "report.html", gradcams=1)   # tiny_run: a run folder
        >>> path.name, "<table" in path.read_text()
        ('report.html', True)
    """
    run = _load_run(Path(run_dir))
    out = Path(out) if out is not None else run.run_dir / "report.html"
    page = _render_page(run, test_data, max(0, int(gradcams)), data_dir)
    return atomic_write_text(out, page)


# --- reading the run folder ---------------------------------------------------------------------------------

def _load_run(run_dir: Path) -> _Run:
    from convkit.train import load_checkpoint

    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: no such run folder" if not run_dir.exists() else
                          f"{run_dir}: a file, not a run folder; pass the folder `convkit train` wrote")
    if not any((run_dir / name).is_file() for name in CHECKPOINTS):
        present = sorted(p.name for p in run_dir.iterdir())
        found = ", ".join(present[:6]) + (f" and {len(present) - 6} more" if len(present) > 6 else "")
        raise ReportError(f"{run_dir}: not a run folder: no {' or '.join(CHECKPOINTS)} in it (found: "
                          f"{found or 'nothing'}); `convkit train` writes one at every epoch end")
    metrics_file = run_dir / "metrics.csv"
    if not metrics_file.is_file():
        raise ReportError(f"{run_dir}: metrics.csv is missing, so the run's history is unknown (training "
                          "writes it at every epoch end, with the checkpoints)")
    try:
        metrics = read_metrics(metrics_file)
    except (ValueError, KeyError, OSError) as err:
        raise ReportError(f"{metrics_file}: unreadable ({err})") from None
    if not metrics:
        raise ReportError(f"{metrics_file}: no epochs recorded yet")
    ckpt = load_checkpoint(run_dir)
    if ckpt.meta.get("task", "classification") != "classification":
        raise ReportError(f"{run_dir}: a {ckpt.meta['task']} run; the report covers classifiers. For a detector, "
                          f"`convkit evaluate {run_dir}` prints COCO's and VOC's tables and writes eval_pr.png and "
                          "eval_predictions.png; the run folder holds curves.png and val_predictions.png")
    run = _Run(run_dir, ckpt, metrics, {})
    run.config = _read_config(run)
    return run


def _read_config(run: _Run) -> dict:
    """config.yaml, else the copy in the checkpoint's metadata (noted in the page)."""
    path = run.run_dir / "config.yaml"
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        try:
            config = load_yaml(text, str(path))  # the one reader: plain types, bounded aliases
            if isinstance(config, dict):
                return config
            problem = "is not a YAML mapping"
        except YAMLInputError as err:
            problem = f"cannot be read ({str(err)[:200]})"
        run.notes.append(f"config.yaml {problem}; the config shown is the checkpoint's copy.")
    else:
        run.notes.append(f"config.yaml is missing; the config shown is the copy in {run.checkpoint_name}.")
    return dict(run.ckpt.meta.get("config") or {})


def _png_file(path: Path) -> bytes | None:
    """The bytes of a PNG file that Pillow can decode, else None (missing or damaged)."""
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return data if data[:8] == b"\x89PNG\r\n\x1a\n" else None
    except (OSError, SyntaxError, ValueError):
        return None


def _draw_to_png(draw: Callable[[str], object]) -> bytes:
    """Runs a runfolder plot function into a temporary file (nothing is added to the run folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        draw(str(path))
        return path.read_bytes()


# --- test data and predictions ------------------------------------------------------------------------------

@dataclass
class _Predictions:
    dataset: object  # ImageTensorDataset
    images: torch.Tensor  # uint8, fitted to the model's input shape
    probs: torch.Tensor
    description: str


def _test_set(run: _Run, test_data, data_dir):
    """The run's test set as training built it (`run_data`: same source, split and test_limit), or
    `test_data` (a dataset, or a name or path whose test split, else all of it, is used, without a limit)."""
    from convkit.train.trainer import run_data

    if test_data is not None and not isinstance(test_data, str | os.PathLike):
        return test_data, f"{getattr(test_data, 'source', 'the given dataset')}"
    if not (test_data or run.config.get("test_data") or run.config.get("data", "default")):
        raise ReportError("the config names no data set; pass test_data")
    changes = {"data_dir": data_dir if data_dir is not None else run.config.get("data_dir")}
    if test_data is not None:
        changes.update(test_data=str(test_data), test_limit=None)
    return run_data(run.config, **changes)


def _predict(run: _Run, test_data, data_dir) -> _Predictions:
    from convkit.train.evaluate import predict_logits
    from convkit.utils import fit_images

    dataset, what = _test_set(run, test_data, data_dir)
    if not hasattr(dataset, "images"):
        raise ReportError(f"{what}: too large to hold in memory")
    ckpt = run.ckpt
    dataset.check_labels(len(ckpt.classes))
    images = fit_images(dataset.images.cpu(), ckpt.input_shape)
    # as evaluation does (flip TTA included), so predictions agree with the run's accuracy
    logits = predict_logits(ckpt.model, images, ckpt.mean, ckpt.std, 500, "cpu", tta=bool(ckpt.meta.get("tta")))
    return _Predictions(dataset, images, logits.softmax(1), what)


# --- formatting ---------------------------------------------------------------------------------------------

def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _array_png(image: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 3) or float [0, 1] -> PNG bytes."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image).save(buf, "PNG")
    return buf.getvalue()


def _img(png: bytes, alt: str, cls: str = "", width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img class="{cls}" src="{_data_uri(png)}" alt="{_e(alt)}"{size}>'


# How each metrics.csv column is shown: (heading, formatter).
_PERCENT = ("train_acc", "test_acc", "test_top5")
_COLUMNS = {
    "epoch": ("epoch", lambda v: f"{int(v)}"),
    "train_loss": ("train loss", lambda v: f"{v:.4f}"),
    "train_acc": ("train acc", lambda v: f"{100 * v:.2f}%"),
    "test_loss": ("test loss", lambda v: f"{v:.4f}"),
    "test_acc": ("test acc", lambda v: f"{100 * v:.2f}%"),
    "test_top5": ("test top-5", lambda v: f"{100 * v:.2f}%"),
    "lr": ("lr", lambda v: f"{v:.3g}"),
    "epoch_s": ("epoch time", lambda v: f"{v:.1f} s"),
    "images_per_s": ("images/s", lambda v: f"{v:,.0f}"),
    "elapsed_s": ("elapsed", lambda v: f"{v:.1f} s"),
}


def _fmt(key: str, value) -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and not math.isfinite(value)):
        return _e(value)
    return _COLUMNS[key][1](value) if key in _COLUMNS else f"{value:,}"


def _metric(key: str, value, source: str, tag: str = "span", epoch: int | None = None, cls: str = "") -> str:
    """A number with the attributes a test (or a script) reads: metric, source, exact value."""
    attrs = f' data-metric="{_e(key)}" data-source="{_e(source)}" data-value="{_e(repr(value))}"'
    if epoch is not None:
        attrs += f' data-epoch="{epoch}"'
    if cls:
        attrs += f' class="{cls}"'
    return f"<{tag}{attrs}>{_fmt(key, value)}</{tag}>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


# --- sections ---------------------------------------------------------------------------------------------

def _header(run: _Run, model_name: str, params: int) -> str:
    cfg, last = run.config, run.metrics[-1]
    data = cfg.get("data", "?")
    epochs_planned = cfg.get("epochs")
    done = f"{last['epoch']}" + (f" of {epochs_planned}" if epochs_planned else "")
    written = datetime.datetime.fromtimestamp((run.run_dir / "metrics.csv").stat().st_mtime)
    facts = [
        ("model", _e(model_name)), ("data", _e(data)), ("epochs", _e(done)),
        ("parameters", _metric("parameters", params, "model")),
        ("checkpoint", f"{_e(run.checkpoint_name)} (epoch {_e(run.ckpt.meta.get('epoch', '?'))})"),
        ("classes", f"{len(run.ckpt.classes)}"), ("input", _e(format_shape(run.ckpt.input_shape))),
        ("last written", _e(written.strftime("%Y-%m-%d %H:%M"))),
    ]
    items = "".join(f"<div><dt>{k}</dt><dd>{v}</dd></div>" for k, v in facts)
    return (f'<header><p class="kicker">convkit run report</p><h1 data-run="{_e(run.name)}">{_e(run.name)}</h1>'
            f'<dl class="facts">{items}</dl></header>')


def _key_figures(run: _Run, macs: int | None) -> str:
    best = run.ckpt.meta.get("metrics") or {}
    last = run.metrics[-1]
    ck = _e(run.checkpoint_name)
    cards = []
    if "test_acc" in best:
        cards.append((_metric("test_acc", best["test_acc"], "checkpoint"),
                      f"test accuracy of {ck} (epoch {_e(best.get('epoch', '?'))})"))
    for key, label in (("test_top5", "top-5"), ("test_loss", "test loss")):
        if key in best:
            cards.append((_metric(key, best[key], "checkpoint"), f"{label} of {ck}"))
    for key, label in (("test_acc", f"test accuracy, last epoch ({last.get('epoch', '?')})"),
                       ("train_acc", "train accuracy, last epoch"), ("elapsed_s", "training time")):
        if key in last:  # a metrics.csv from an older convkit may lack a column
            cards.append((_metric(key, last[key], "final"), label))
    if macs is not None:
        cards.append((f'<span data-metric="macs" data-source="model" data-value="{macs}">{_count(macs)}</span>',
                      "multiply-adds per image"))
    body = "".join(f'<div class="card"><div class="big">{v}</div><div class="label">{label}</div></div>'
                   for v, label in cards)
    return f'<section><div class="cards">{body}</div></section>'


def _count(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:,}"


def _plots(run: _Run, predictions: Callable[[], _Predictions | None]) -> str:
    from convkit.train.runfolder import plot_confusion, plot_curves

    figures = []
    curves = _png_file(run.run_dir / "curves.png")
    if curves is None:
        run.notes.append("curves.png is missing or damaged; the curves were redrawn from metrics.csv.")
        curves = _draw_to_png(lambda p: plot_curves(run.metrics, p, run.name))
    figures.append(("curves", curves, "loss and accuracy per epoch (curves.png)"))
    confusion = _png_file(run.run_dir / "confusion.png")
    caption = "test confusion matrix at the best epoch (confusion.png): rows true, columns predicted"
    if confusion is None:
        confusion, caption = _redraw_confusion(run, predictions, plot_confusion)
    if confusion is not None:
        figures.append(("confusion", confusion, caption))
    body = "".join(f'<figure class="plot" style="{_flex(png)}">{_img(png, name, "plot")}'
                   f"<figcaption>{_e(cap)}</figcaption></figure>" for name, png, cap in figures)
    return f'<section><h2>Training</h2><div class="row">{body}</div></section>'


def _flex(png: bytes) -> str:
    """Flex growth in proportion to the aspect ratio: side by side, the plots come out equally tall."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        aspect = im.width / max(im.height, 1)
    return f"flex:{aspect:.3f} 1 {280 * aspect:.0f}px"


def _redraw_confusion(run: _Run, predictions, plot_confusion) -> tuple[bytes | None, str]:
    from convkit.train.evaluate import confusion_matrix

    pred = predictions()
    if pred is None:
        run.notes.append("confusion.png is missing and the test data could not be loaded, so no confusion "
                         "matrix is shown.")
        return None, ""
    k = len(run.ckpt.classes)
    matrix = confusion_matrix(pred.probs.argmax(1), pred.dataset.labels.cpu(), k)
    title = f"confusion matrix, {run.checkpoint_name}, {len(pred.images):,} test images"
    png = _draw_to_png(lambda p: plot_confusion(matrix, run.ckpt.classes, p, title))
    run.notes.append(f"confusion.png is missing; the matrix was recomputed with {run.checkpoint_name} on "
                     f"{pred.description}.")
    return png, f"{title}: rows true, columns predicted (recomputed)"


def _epochs_table(run: _Run) -> str:
    keys = [k for k in _COLUMNS if any(k in row for row in run.metrics)]
    best_epoch = run.ckpt.meta.get("metrics", {}).get("epoch") if run.checkpoint_name.startswith("best") else None
    head = "".join(f"<th>{_e(_COLUMNS[k][0])}</th>" for k in keys)
    rows = []
    for row in run.metrics:
        epoch = row.get("epoch")
        cells = "".join(_metric(k, row[k], "epoch", "td", epoch) if k in row else "<td></td>" for k in keys)
        cls = ' class="best"' if epoch == best_epoch else ""
        rows.append(f"<tr{cls}>{cells}</tr>")
    legend = f'<p class="legend">highlighted: the epoch saved as {_e(run.checkpoint_name)}</p>' if best_epoch else ""
    return (f'<section><h2>Metrics per epoch</h2><p class="sub">from metrics.csv</p><div class="scroll">'
            f'<table class="num" id="epochs"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f"</div>{legend}</section>")


def _summary_section(result) -> str:
    rows = []
    for r in result.rows:
        rf = r.receptive_field
        rf_text = "" if rf is None else str(rf)
        shape = format_shape(r.output_shape) if r.output_shape else ""
        rows.append(f'<tr data-layer="{_e(r.name)}"><td class="name">{_e(r.name)}</td><td>{_e(r.type)}</td>'
                    f"<td>{_e(r.geometry_text())}</td><td>{_e(shape)}</td>"
                    f'<td data-params="{r.params}">{r.params:,}</td><td>{r.macs:,}</td><td>{_e(rf_text)}</td></tr>')
    t = result.totals
    total_rf = ""
    if t.get("receptive_field"):
        field = t["receptive_field"]
        kind = field.get("kind", "numeric")
        what = f"{format_pair(field['size'])} px" if kind == "numeric" else kind
        total_rf = f"{what} at {t.get('receptive_field_layer')}"
    foot = (f'<tr><td class="name">total</td><td></td><td></td><td></td>'
            f'<td data-metric="parameters" data-source="summary" data-value="{t["parameters"]}">{t["parameters"]:,}</td>'
            f'<td data-metric="macs" data-source="summary" data-value="{t["macs"]}">{t["macs"]:,}</td>'
            f"<td>{_e(total_rf)}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("layer", "type", "kernel/stride/pad", "output", "parameters",
                                               "MACs", "receptive field size/jump/start"))
    size = format_shape(result.input_size)
    return (f'<section><h2>Model</h2><p class="sub">convkit.summary for one {size} input: multiply-adds of '
            "convolutions and linear layers per image, receptive fields in input pixels</p>"
            f'<div class="scroll"><table class="num layers" id="summary"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody><tfoot>{foot}</tfoot></table></div></section>")


def _filters_section(run: _Run) -> str:
    from convkit.explain.filters import filter_grid

    model = run.ckpt.model
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    grid = np.asarray(filter_grid(model))
    scale = max(1, min(16, 384 // max(grid.shape[:2])))  # tiny kernels drawn large, pixels kept sharp
    png = _array_png(_upscale(grid, scale))
    what = (f"{conv.out_channels} filters of {format_shape(conv.kernel_size)} over "
            f"{conv.in_channels} input channel{'s' if conv.in_channels > 1 else ''}" if conv else "")
    return (f'<section><h2>First-layer filters</h2><p class="sub">{_e(what)}</p>'
            f'<figure class="filters">{_img(png, "first-layer filters", "filters")}</figure></section>')


def _upscale(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, 0).repeat(scale, 1) if scale > 1 else image


def _gradcam_section(run: _Run, pred: _Predictions, count: int) -> str:
    from convkit.explain.attribution import attribute

    labels = pred.dataset.labels.cpu()
    predicted = pred.probs.argmax(1)
    picked = _pick(predicted == labels, count)
    ckpt = run.ckpt
    index = torch.tensor([i for i, _ in picked], dtype=torch.long)
    images = pred.images[index]
    side = THUMB
    big = torch.nn.functional.interpolate(images.float(), size=(side, side), mode="nearest").to(torch.uint8)
    heat = attribute(ckpt.model, ckpt.normalize(images), method="gradcam", target=predicted[index])
    heat = torch.nn.functional.interpolate(heat.detach().float()[:, None], size=(side, side), mode="bilinear",
                                           align_corners=False)[:, 0].clamp(0, 1)
    cards = {True: [], False: []}
    for k, (i, correct) in enumerate(picked):
        cards[correct].append(_gradcam_card(run, pred, i, big[k], heat[k], int(predicted[i]), int(labels[i])))
    acc = float((predicted == labels).float().mean())
    sub = (f"{_e(pred.description)}; {_e(ckpt.path.name)} classifies "
           f'<span data-metric="test_acc" data-source="recomputed" data-value="{acc!r}">{100 * acc:.2f}%</span> '
           "of them correctly. Each pair: the image, and Grad-CAM of the predicted class over it (red: "
           "where the last conv layer's features that raise that class's score are strongest).")
    groups = "".join(f'<h3>{title} <span class="count">{len(cards[ok])}</span></h3><div class="gallery">'
                     f"{''.join(cards[ok])}</div>" for ok, title in ((True, "Correct"), (False, "Wrong"))
                     if cards[ok])
    return f'<section><h2>Grad-CAM on test images</h2><p class="sub">{sub}</p>{groups}</section>'


def _pick(correct: torch.Tensor, count: int) -> list[tuple[int, bool]]:
    """The first count/2 correct and count/2 wrong indices, filled from the other kind when one runs short."""
    right = correct.nonzero().flatten().tolist()
    wrong = (~correct).nonzero().flatten().tolist()
    n_wrong = min(len(wrong), count // 2)
    n_right = min(len(right), count - n_wrong)
    n_wrong = min(len(wrong), count - n_right)
    return [(i, True) for i in right[:n_right]] + [(i, False) for i in wrong[:n_wrong]]


def _gradcam_card(run: _Run, pred: _Predictions, i: int, image: torch.Tensor, heat: torch.Tensor,
                  p: int, y: int) -> str:
    from convkit.explain.attribution import overlay

    classes = run.ckpt.classes
    shown = image if image.shape[0] in (1, 3) else image[:3]
    original = _array_png(np.moveaxis(shown.expand(3, -1, -1).numpy() if shown.shape[0] == 1 else shown.numpy(),
                                      0, -1))
    blended = _array_png(np.asarray(overlay(image, heat)))
    prob = float(pred.probs[i, p])
    ok = p == y
    verdict = "correct" if ok else "wrong"
    return (f'<figure class="cam {verdict}" data-index="{i}" data-true="{_e(classes[y])}" '
            f'data-predicted="{_e(classes[p])}" data-probability="{prob!r}">'
            f'<div class="pair">{_img(original, f"test image {i}", "thumb", THUMB)}'
            f'{_img(blended, f"Grad-CAM of test image {i}", "thumb", THUMB)}</div>'
            f'<figcaption><span class="mark">{"&#10003;" if ok else "&#10007;"}</span> '
            f"#{i} true <b>{_e(classes[y])}</b><br>predicted <b>{_e(classes[p])}</b> "
            f'<span class="prob">{100 * prob:.1f}%</span></figcaption></figure>')


def _config_section(run: _Run) -> str:
    items = "".join(f'<div><dt>{_e(k)}</dt><dd data-config="{_e(k)}">{_e(_yaml_value(v))}</dd></div>'
                    for k, v in run.config.items())
    return (f'<section><h2>Config</h2><p class="sub">config.yaml: <code>convkit train --config '
            f'{_e(run.run_dir / "config.yaml")}</code> repeats the run</p>'
            f'<dl class="config">{items}</dl></section>')


def _reuse_section(run: _Run) -> str:
    """A fine-tuning run (finetune.json): its source, the adaptations, and each phase's frozen and trained parts."""
    file = run.run_dir / "finetune.json"
    if not file.is_file():
        return ""
    record = json.loads(file.read_text(encoding="utf-8"))
    source = record.get("source") or {}
    sha = str(source.get("sha256") or "")
    kind = "trained" if source.get("trained") else "untrained: the from-scratch baseline"
    lines = [f"<p>source <code>{_e(source.get('ref'))}</code> ({_e(source.get('kind'))}, {_e(kind)}), "
             f"SHA-256 <code title=\"{_e(sha)}\">{_e(sha[:16])}…</code>; strategy "
             f"<b>{_e(record.get('strategy'))}</b></p>"]
    changes = [a.get("text", "") for a in record.get("adaptations") or [] if isinstance(a, dict)]
    if changes:
        lines.append("<ul>" + "".join(f"<li>{_e(text)}</li>" for text in changes) + "</ul>")
    rows = []
    for phase in record.get("phases") or []:
        if not isinstance(phase, dict):
            continue
        first, last = (phase.get("epochs") or ["?", "?"])[:2]
        rates = ", ".join(f"{name} {lr:.3g}" for name, lr in (phase.get("group_lrs") or {}).items()
                          if isinstance(lr, int | float))
        rows.append(f"<tr><td>{_e(phase.get('name'))}</td><td>{_e(first)}–{_e(last)}</td>"
                    f"<td>{_e(', '.join(phase.get('trainable_stages') or []))}</td>"
                    f"<td>{_e(', '.join(phase.get('frozen_stages') or []) or 'nothing')}</td>"
                    f"<td>{_count(int(phase.get('frozen_size') or 0))}</td><td>{_e(rates)}</td></tr>")
    table = ('<table id="phases"><thead><tr><th>phase</th><th>epochs</th><th>trained</th><th>frozen</th>'
             f'<th>frozen weights</th><th>peak lr</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')
    return (f'<section><h2>Reuse</h2><p class="sub">from finetune.json</p>{"".join(lines)}'
            f'<div class="scroll">{table}</div></section>')


def _yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip()
    return str(value)


# --- the page ---------------------------------------------------------------------------------------------

def _optional(run: _Run, what: str, build: Callable[[], str]) -> str:
    """A section that may fail (missing data, an explanation that cannot run): its error becomes a note."""
    try:
        return build()
    except Exception as err:  # noqa: BLE001 - any failure of one section must not lose the rest of the page
        message = f"{what} left out: {type(err).__name__}: {err}"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        run.notes.append(message)
        return ""


def _render_page(run: _Run, test_data, gradcams: int, data_dir) -> str:
    from convkit.models import count_parameters

    model = run.ckpt.model
    spec = run.ckpt.meta.get("model", {})
    model_name = spec.get("name") or Path(str(spec.get("path", run.config.get("model", "?")))).stem
    params = count_parameters(model)
    cache: dict[str, _Predictions | None] = {}

    def predictions() -> _Predictions | None:  # loaded once, and only if a section needs it
        if "p" not in cache:
            cache["p"] = None
            try:
                cache["p"] = _predict(run, test_data, data_dir)
            except Exception as err:  # noqa: BLE001 - a missing data set must not lose the rest of the page
                run.notes.append(f"test data not available ({type(err).__name__}: {err}).")
        return cache["p"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shape warnings belong to `convkit summary`, not to the report
        result = _summary_or_none(run, model)
    sections = [
        _key_figures(run, result.totals["macs"] if result else None),
        "<!--notes-->",
        _plots(run, predictions),
        _optional(run, "the reuse record", lambda: _reuse_section(run)),
        _epochs_table(run),
    ]
    if gradcams:
        sections.append(_optional(run, "Grad-CAM", lambda: _gradcam_section(run, _need(predictions()), gradcams)))
    sections.append(_optional(run, "first-layer filters", lambda: _filters_section(run)))
    if result is not None:
        sections.append(_summary_section(result))
    sections.append(_config_section(run))
    notes = "".join(_note(n) for n in run.notes)
    notes = f'<section class="notes"><h2>Notes</h2>{notes}</section>' if notes else ""
    # the notes go near the top but are known only once every section has been built
    body = _header(run, model_name, params) + "".join(sections).replace("<!--notes-->", notes) + _footer(run)
    return _PAGE.format(title=_e(f"{run.name}: convkit report"), css=_CSS, body=body)


def _summary_or_none(run: _Run, model):
    from convkit.inspect import summary

    try:
        return summary(model, input_size=run.ckpt.input_shape)
    except Exception as err:  # noqa: BLE001 - a model the meta-device tracer cannot run: no layer table
        run.notes.append(f"layer table left out: {type(err).__name__}: {err}")
        return None


def _need(pred: _Predictions | None) -> _Predictions:
    if pred is None:
        raise ReportError("no test images (see the note on the test data)")
    return pred


def _footer(run: _Run) -> str:
    from convkit import __version__

    files = ", ".join(sorted(p.name for p in run.run_dir.iterdir()
                             if not p.name.startswith(".") and p.suffix != ".html"))
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<footer>convkit {_e(__version__)} · written {_e(now)} from {_e(run.run_dir)} "
            f"({_e(files)})</footer>")


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style></head>
<body><main>{body}</main></body></html>
"""

_CSS = """
:root { --ink:#1d2330; --mute:#5d6677; --line:#e3e7ee; --soft:#f5f7fa; --accent:#2f6fdf; --good:#1f8a4c;
  --bad:#c2392b; }
* { box-sizing:border-box; }
body { margin:0; background:#eef1f5; color:var(--ink); font:14px/1.45 -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width:1180px; margin:0 auto; padding:24px 28px 40px; background:#fff; min-height:100vh; }
header { border-bottom:1px solid var(--line); padding-bottom:14px; margin-bottom:6px; }
.kicker { margin:0; color:var(--accent); font-weight:600; letter-spacing:.06em; text-transform:uppercase;
  font-size:11px; }
h1 { margin:2px 0 10px; font-size:26px; font-weight:650; word-break:break-all; }
h2 { font-size:17px; margin:26px 0 4px; padding-bottom:4px; border-bottom:2px solid var(--soft); }
h3 { font-size:14px; margin:14px 0 6px; color:var(--mute); }
.sub, .legend { margin:0 0 10px; color:var(--mute); font-size:12.5px; }
.facts { display:flex; flex-wrap:wrap; gap:6px 26px; margin:0; }
.facts div { display:flex; flex-direction:column; }
.facts dt { font-size:11px; color:var(--mute); text-transform:uppercase; letter-spacing:.04em; }
.facts dd { margin:0; font-weight:600; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(122px, 1fr)); gap:10px; margin-top:16px; }
.card { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card .big { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.card:first-child { background:#eaf1ff; border-color:#c9dafc; grid-column:span 2; }
.card .label { color:var(--mute); font-size:12px; }
.row { display:flex; flex-wrap:wrap; gap:18px; align-items:flex-start; }
figure { margin:0; }
figure.plot { min-width:0; }
figure.plot img { width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { color:var(--mute); font-size:12px; margin-top:4px; }
.scroll { overflow-x:auto; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left; white-space:nowrap; }
thead th { background:var(--soft); font-weight:600; font-size:12px; color:var(--mute); position:sticky; top:0; }
table.num td, table.num th { text-align:right; font-variant-numeric:tabular-nums; }
table.num td:first-child, table.num th:first-child { text-align:left; }
table.layers td:nth-child(-n+4), table.layers th:nth-child(-n+4) { text-align:left; }
table.layers td.name { font-family:ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size:12px; }
tbody tr:nth-child(even) { background:#fafbfd; }
tbody tr:hover { background:#f0f5ff; }
tr.best { background:#eaf7ef !important; font-weight:600; }
tfoot td { font-weight:700; border-top:2px solid var(--ink); border-bottom:none; }
dl.config { display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:0 24px; margin:0; }
dl.config div { display:flex; justify-content:space-between; align-items:baseline; gap:12px; padding:4px 2px;
  border-bottom:1px solid var(--line); }
dl.config dt { color:var(--mute); }
dl.config dd { margin:0; text-align:right; word-break:break-all;
  font-family:ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size:12px; }
.gallery { display:flex; flex-wrap:wrap; gap:12px; }
figure.cam { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:8px;
  border-top:3px solid var(--good); }
figure.cam.wrong { border-top-color:var(--bad); }
.pair { display:flex; gap:4px; }
img.thumb { width:128px; height:128px; image-rendering:pixelated; border-radius:4px; display:block; }
figure.cam figcaption { color:var(--ink); line-height:1.35; }
.mark { font-weight:700; color:var(--good); }
.wrong .mark { color:var(--bad); }
.prob { color:var(--mute); font-variant-numeric:tabular-nums; }
.count { background:var(--line); border-radius:9px; padding:0 7px; font-size:11px; }
img.filters { image-rendering:pixelated; max-width:100%; height:auto; border:1px solid var(--line); }
.notes .note { background:#fff7e6; border-left:3px solid #e6a23c; padding:6px 10px; margin:6px 0;
  font-size:13px; }
code { font-family:ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size:12px; background:var(--soft);
  padding:1px 4px; border-radius:3px; }
footer { margin-top:32px; padding-top:10px; border-top:1px solid var(--line); color:var(--mute); font-size:11.5px; }
"""
