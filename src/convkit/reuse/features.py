"""Feature extraction: a trained CNN's pooled pre-logit features, cached, and drawn as a 2-D map.

The lectures' first recipe for reuse: take a pre-trained network, remove its last layer, compute the
representations of the new images, and train a classifier on them. `extract_features` computes them (the input
of the classifier's last layer); `cached_features` computes them once per (weights, data, transform, layer) and
loads them afterwards, so every epoch of a head trained on them costs only the head; `feature_map` and
`plot_feature_map` draw them in 2-D (PCA or t-SNE), one colour per class.

A features file is a safetensors file (`save_features`, `load_features`): ``features`` float32 (N, D),
``labels`` int64 (N,), optionally ``map`` float32 (N, 2), and JSON metadata (class names, source, key...).

>>> model = convkit.create_model("fastcnn")
>>> data = convkit.data.load_default("test").subset(range(64))
>>> features, labels = extract_features(model, data, progress=False)
>>> features.shape, features.dtype, labels[:4].tolist()
(torch.Size([64, 3136]), torch.float32, [4, 4, 2, 8])
>>> features, labels = cached_features(model, None, data, "cache", progress=False)   # computed, then stored
>>> sorted(p.suffix for p in Path("cache").iterdir())
['.safetensors']
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from convkit.errors import ConvkitError
from convkit.models.weights import CheckpointError, load_tensors, save_tensors
from convkit.utils import shorten

__all__ = ["FORMAT", "MAP_SIZE", "FeatureError", "cached_features", "data_fingerprint", "extract_features",
           "feature_layer", "feature_map", "load_features", "model_source_sha256", "plot_feature_map", "save_features",
           "weights_sha256"]

FORMAT = "convkit-features-1"
MAP_SIZE = (800, 640)  # (width, height) in pixels of the PNG `plot_feature_map` writes
MAP_METHODS = ("pca", "tsne")
TSNE_PCA_DIMS = 50  # t-SNE runs on the first 50 principal components of wider features (far faster)
PROGRESS_DELAY = 2.0  # seconds of work before a progress bar appears (short work shows none)


class FeatureError(ValueError, ConvkitError):
    """Features cannot be computed or drawn: no images, no final Linear layer, channels that do not fit..."""


# --- which layer ---------------------------------------------------------------------------------------------

def _is_classifier_net(model: nn.Module) -> bool:
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise FeatureError(f"{type(model).__name__}: no nn.Linear layer, so no pre-logit features; expected a zoo "
                           "classifier (forward_features/forward_head) or a model whose last layer is a Linear")
    return found[-1]


def feature_layer(model: nn.Module) -> str:
    """Names the features `extract_features` takes from `model` (part of the cache key).

    Args:
        model: a zoo classifier (``forward_features`` and ``forward_head``) or any module with an ``nn.Linear``.

    Returns:
        ``"forward_head(pre_logits=True)"`` for zoo classifiers, else ``"input of <name of the last Linear>"``.

    Raises:
        FeatureError: a model without a Linear layer.

    >>> feature_layer(convkit.create_model("fastcnn"))
    'forward_head(pre_logits=True)'
    >>> feature_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    'input of 3'
    """
    if _is_classifier_net(model):
        return "forward_head(pre_logits=True)"
    return f"input of {_last_linear(model)[0]}"


# --- the data ------------------------------------------------------------------------------------------------

def _batches(dataset: Any, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images, labels) batches in the dataset's order: convkit datasets, (images, labels) tensors, or any
    torch Dataset of (image, label) items (its own transform applied)."""
    if hasattr(dataset, "batches"):  # ImageTensorDataset, ImageFileDataset
        yield from dataset.batches(batch_size, shuffle=False)
    elif isinstance(dataset, tuple | list) and len(dataset) == 2 and all(torch.is_tensor(t) for t in dataset):
        images, labels = dataset
        for start in range(0, len(images), batch_size):
            yield images[start:start + batch_size], torch.as_tensor(labels[start:start + batch_size])
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for images, labels in loader:
            yield images, torch.as_tensor(labels)


def _length(dataset: Any) -> int:
    if isinstance(dataset, tuple | list) and len(dataset) == 2 and all(torch.is_tensor(t) for t in dataset):
        return len(dataset[0])
    return len(dataset)


def _source(dataset: Any) -> str:
    return str(getattr(dataset, "source", None) or type(dataset).__name__)


def _hash_tensor(h, tensor: torch.Tensor) -> None:
    tensor = tensor.detach().to("cpu").contiguous()
    shape = tuple(tensor.shape)
    tensor = tensor.reshape(-1)
    h.update(f"{tensor.dtype}{shape}".encode())
    h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


def data_fingerprint(dataset: Any) -> str:
    """The SHA-256 of what a dataset holds (part of the cache key): same images, labels and classes, same value.

    An in-memory dataset is hashed by its pixels and labels; a dataset streamed from files by its file list
    (path, size, modification time, label) and decoded size; a torch Dataset of files (torchvision's
    ImageFolder) by its ``samples`` and ``transform``; any other by the tensors of all its items.

    Args:
        dataset: a convkit dataset, an (images, labels) pair of tensors, or a torch Dataset of (image, label).

    Returns:
        64 hex digits.

    >>> a = convkit.data.load_default("test").subset(range(8))
    >>> b = convkit.data.load_default("test").subset(range(8))
    >>> data_fingerprint(a) == data_fingerprint(b), data_fingerprint(a) == data_fingerprint(a.subset(range(7)))
    (True, False)
    """
    h = hashlib.sha256()
    classes = getattr(dataset, "classes", None)
    h.update(json.dumps(list(classes) if classes is not None else None).encode())
    if isinstance(getattr(dataset, "images", None), torch.Tensor):
        _hash_tensor(h, dataset.images)
        _hash_tensor(h, dataset.labels)
    elif isinstance(dataset, tuple | list) and len(dataset) == 2 and all(torch.is_tensor(t) for t in dataset):
        _hash_tensor(h, dataset[0])
        _hash_tensor(h, torch.as_tensor(dataset[1]))
    elif getattr(dataset, "samples", None) is not None:
        rows = []
        for path, label in dataset.samples:
            stat = os.stat(path)
            rows.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, int(label)])
        extra = {"channels": getattr(dataset, "channels", None), "image_size": getattr(dataset, "image_size", None),
                 "transform": repr(getattr(dataset, "transform", None))}
        h.update(json.dumps([rows, extra], default=str).encode())
    else:
        for images, labels in _batches(dataset, 256):
            _hash_tensor(h, images)
            _hash_tensor(h, labels)
    return h.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """The SHA-256 of a model's state dict (names, dtypes, shapes and values), for weights without a file.

    >>> torch.manual_seed(0); a = nn.Linear(2, 1)
    <torch._C.Generator object at ...>
    >>> weights_sha256(a) == weights_sha256(a), weights_sha256(a) == weights_sha256(nn.Linear(2, 1))
    (True, False)
    """
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        _hash_tensor(h, tensor)
    return h.hexdigest()


def model_source_sha256(model: nn.Module) -> str:
    """The SHA-256 of where a model's weights came from: its checkpoint or weights file (a run's, or a foreign
    state dict), else its state dict (`weights_sha256`: a zoo model built in this process).

    >>> model = convkit.models.reference.resolve_model("fastcnn")
    >>> model_source_sha256(model) == weights_sha256(model)
    True
    """
    from convkit.data.download import file_digest
    from convkit.models.reference import model_cfg

    checkpoint = model_cfg(model).checkpoint
    return file_digest(checkpoint) if checkpoint else weights_sha256(model)


# --- extraction ----------------------------------------------------------------------------------------------

def _prepare(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 pixels -> the model's input, with its own normalisation; float images are taken as they are
    (already transformed by the dataset's own transform)."""
    from convkit.models.reference import model_cfg

    images = images.to(device)
    if images.dtype == torch.uint8:
        return model_cfg(model).normalize(images)
    return images.float()


def _check_fit(model: nn.Module, images: torch.Tensor, source: str) -> None:
    """Channels the model does not take, or images too small for its layers: one line naming both, found by
    a trace on the meta device (milliseconds) instead of a torch traceback from the first batch."""
    from convkit.inspect.trace import fit_error
    from convkit.models.reference import model_cfg

    name = model_cfg(model).name
    shape = model_cfg(model).input_shape
    if shape is not None and images.dim() == 4 and images.shape[1] != shape[0]:
        raise FeatureError(f"{source}: images with {images.shape[1]} channel(s), but the model {name!r} takes "
                           f"{shape[0]}; adapt its first layer first (convkit.finetune does), or load the data "
                           "with that many channels")
    err = fit_error(model, images.shape[1:], training=False)
    if err is not None:
        raise FeatureError(f"{source}: the model {name!r} cannot take its {'x'.join(map(str, images.shape[1:]))} "
                           f"images: {err}") from None


def extract_features(model: nn.Module, dataset: Any, batch_size: int = 256, device: str | torch.device = "cpu",
                     progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's pooled pre-logit features of every image: the input of the model's final classifier.

    For a zoo classifier ``model.forward_head(model.forward_features(x), pre_logits=True)``; for any other module
    the input of its last ``nn.Linear``, caught by a hook. The model runs in eval mode without gradients (its
    mode is restored afterwards); uint8 images are normalised as the model was trained (`ModelCfg.normalize`:
    its own mean and std), float images (a torch Dataset's transform) are used as they are.

    Args:
        model: the network (moved to `device`).
        dataset: a convkit dataset (`convkit.data.load_dataset`), an (images, labels) pair of tensors, or a torch
            Dataset of (image, label) items; read in its order.
        batch_size: images per forward pass.
        device: where the model runs.
        progress: a progress bar (on stderr) when the work lasts more than a couple of seconds.

    Returns:
        (features float32 (N, D) on the CPU, labels int64 (N,)).

    Raises:
        FeatureError: an empty dataset, images whose channels the model does not take, or a model without a
            Linear layer.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> features, labels = extract_features(model, (torch.rand(5, 1, 2, 2), torch.arange(5)), progress=False)
    >>> features.shape, labels.tolist()
    (torch.Size([5, 3]), [0, 1, 2, 3, 4])
    """
    source = _source(dataset)
    total = _length(dataset)
    if total == 0:
        raise FeatureError(f"{source}: no images to compute features of")
    device = torch.device(device)
    model = model.to(device)
    caught: list[torch.Tensor] = []
    hook = None
    if not _is_classifier_net(model):
        _, linear = _last_linear(model)
        hook = linear.register_forward_pre_hook(lambda module, inputs: caught.append(inputs[0].detach()))
    was_training = model.training
    model.eval()
    features, labels = [], []
    bar = tqdm(total=total, unit="img", desc="features", disable=not progress, leave=False, file=sys.stderr,
               delay=PROGRESS_DELAY)
    try:
        with torch.no_grad():
            for images, batch_labels in _batches(dataset, batch_size):
                if not features:
                    _check_fit(model, images, source)
                x = _prepare(model, images, device)
                if hook is None:
                    out = model.forward_head(model.forward_features(x), pre_logits=True)
                else:
                    caught.clear()
                    model(x)
                    if not caught:
                        raise FeatureError(f"{type(model).__name__}: its last Linear layer "
                                           f"({_last_linear(model)[0]}) did not run in forward; expected the "
                                           "classifier's last layer to be the last Linear registered")
                    out = caught[-1]
                features.append(out.reshape(len(x), -1).float().cpu())
                labels.append(batch_labels.long().cpu())
                bar.update(len(x))
    finally:
        bar.close()
        model.train(was_training)
        if hook is not None:
            hook.remove()
    return torch.cat(features), torch.cat(labels)


# --- files and the cache -------------------------------------------------------------------------------------

def save_features(path: str | os.PathLike, features: torch.Tensor, labels: torch.Tensor, meta: dict | None = None,
                  coords: torch.Tensor | np.ndarray | None = None) -> Path:
    """Writes features (and a 2-D map of them) as a safetensors file with JSON metadata, atomically.

    Args:
        path: the .safetensors file.
        features: float (N, D).
        labels: int (N,).
        meta: JSON metadata (class names, source, key...); ``format`` is set to `FORMAT`.
        coords: optional (N, 2) map coordinates, stored as ``map``.

    Returns:
        ``path`` as a Path.

    >>> _ = save_features("f.safetensors", torch.ones(3, 4), torch.tensor([0, 1, 0]), {"classes": ["a", "b"]})
    >>> features, labels, meta = load_features("f.safetensors")
    >>> features.shape, labels.tolist(), meta["classes"]
    (torch.Size([3, 4]), [0, 1, 0], ['a', 'b'])
    """
    tensors = {"features": features.float(), "labels": labels.long()}
    if coords is not None:
        tensors["map"] = torch.as_tensor(np.asarray(coords), dtype=torch.float32)
    return save_tensors(path, tensors, {**(meta or {}), "format": FORMAT})


def load_features(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Reads a features file written by `save_features` (no unpickling): (features, labels, metadata).

    Args:
        path: the file.

    Returns:
        (features float32 (N, D), labels int64 (N,), the JSON metadata). The 2-D map, when one was saved, is the
        tensor ``map``: ``convkit.models.weights.load_tensors(path)[0]["map"]``.

    Raises:
        CheckpointError: not a safetensors file, a damaged one, or not a features file (naming it).

    >>> _ = save_features("f.safetensors", torch.zeros(2, 3), torch.tensor([1, 0]))
    >>> load_features("f.safetensors")[2]["format"]
    'convkit-features-1'
    """
    tensors, meta = load_tensors(path)
    if meta.get("format") != FORMAT or "features" not in tensors or "labels" not in tensors:
        raise CheckpointError(f"{path}: not a features file (format {meta.get('format')!r}, tensors "
                              f"{shorten(sorted(tensors))}); expected {FORMAT!r} with features and labels, as "
                              "`convkit features` writes")
    return tensors["features"], tensors["labels"], meta


def _transform(model: nn.Module, dataset: Any) -> dict:
    from convkit.models.reference import model_cfg

    cfg = model_cfg(model)
    mean, std = cfg.mean_std()
    return {"normalize": {"mean": mean.tolist(), "std": std.tolist()},
            "dataset_transform": repr(getattr(dataset, "transform", None))}


def cached_features(model: nn.Module, source_sha256: str | None, dataset: Any, cache_dir: str | os.PathLike,
                    batch_size: int = 256, device: str | torch.device = "cpu",
                    progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features`, computed once: later calls with the same weights, data, transform and layer load them.

    The key is the SHA-256 of: `source_sha256` (the weights), `data_fingerprint(dataset)`, the transform (the
    model's mean and std, the dataset's own transform) and `feature_layer(model)`. The file
    ``<cache_dir>/features-<key>.safetensors`` holds features and labels, with JSON metadata (format, key, the
    key's parts, class names, source); it is written atomically, so a killed run leaves no half file. A cache
    file that is damaged or holds another key is computed again and replaced.

    Args:
        model: the network.
        source_sha256: the SHA-256 of the source weights file; None: `model_source_sha256(model)`.
        dataset: as `extract_features` takes.
        cache_dir: the cache folder (created if missing).
        batch_size, device, progress: as `extract_features` takes.

    Returns:
        (features float32 (N, D), labels int64 (N,)).

    Raises:
        FeatureError: as `extract_features`.
        OSError: the cache folder cannot be written.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> data = (torch.rand(5, 1, 2, 2), torch.arange(5))
    >>> first = cached_features(model, None, data, "cache", progress=False)      # computed and stored
    >>> second = cached_features(model, None, data, "cache", progress=False)     # loaded
    >>> torch.equal(first[0], second[0])
    True
    """
    parts = {"source_sha256": source_sha256 or model_source_sha256(model), "data": data_fingerprint(dataset),
             "transform": _transform(model, dataset), "layer": feature_layer(model), "format": FORMAT}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / f"features-{key}.safetensors"
    if path.is_file():
        try:
            features, labels, meta = load_features(path)
            if meta.get("key") == key:
                return features, labels
        except CheckpointError:
            pass  # damaged: computed again below and replaced
    features, labels = extract_features(model, dataset, batch_size=batch_size, device=device, progress=progress)
    classes = getattr(dataset, "classes", None)
    meta = {"key": key, **parts, "classes": list(classes) if classes else None, "source": _source(dataset)}
    save_features(path, features, labels, meta)
    return features, labels


# --- the map -------------------------------------------------------------------------------------------------

def feature_map(features: torch.Tensor | np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Features (N, D) -> 2-D coordinates (N, 2) with scikit-learn's PCA or t-SNE.

    Args:
        features: the features.
        method: "pca" (fast, linear) or "tsne" (clusters show better; slower; features wider than 50 are first
            reduced to their 50 principal components, as scikit-learn advises).
        seed: t-SNE's random state.

    Returns:
        float32 (N, 2).

    Raises:
        FeatureError: an unknown method, or fewer than 3 images.

    >>> coords = feature_map(torch.randn(10, 5), "pca")
    >>> coords.shape, coords.dtype
    ((10, 2), dtype('float32'))
    """
    if method not in MAP_METHODS:
        raise FeatureError(f"map method {method!r}: expected one of {', '.join(MAP_METHODS)}")
    x = np.asarray(features.detach().cpu().numpy() if torch.is_tensor(features) else features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise FeatureError(f"a {method} map needs features of at least 3 images, got shape {x.shape}")
    if x.shape[1] < 2:
        x = np.concatenate([x, np.zeros((len(x), 2 - x.shape[1]), np.float32)], axis=1)
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2).fit_transform(x)
    else:
        from sklearn.manifold import TSNE

        if x.shape[1] > TSNE_PCA_DIMS and len(x) > TSNE_PCA_DIMS:  # sklearn's advice: PCA to ~50 dims first
            from sklearn.decomposition import PCA

            x = PCA(n_components=TSNE_PCA_DIMS, random_state=seed).fit_transform(x).astype(np.float32)
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return np.asarray(coords, dtype=np.float32)


def plot_feature_map(coords: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                     classes: list[str] | None, path: str | os.PathLike, title: str = "") -> Path:
    """Draws 2-D coordinates as a scatter plot, one colour per class, with a legend of the class names.

    Args:
        coords: (N, 2) from `feature_map`.
        labels: (N,) class numbers.
        classes: class names, index = label (None: the numbers).
        path: the PNG, `MAP_SIZE` pixels, written atomically.
        title: the plot's title.

    Returns:
        ``path`` as a Path.

    >>> plot_feature_map(np.random.rand(6, 2), np.array([0, 1, 0, 1, 2, 2]), ["a", "b", "c"], "map.png")
    PosixPath('map.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convkit.utils import atomic_write

    coords = np.asarray(coords)
    labels = np.asarray(labels)
    present = sorted(set(labels.tolist()))
    cmap = plt.get_cmap("tab10" if len(present) <= 10 else "tab20" if len(present) <= 20 else "turbo")
    width, height = MAP_SIZE
    fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
    try:
        for i, label in enumerate(present):
            at = labels == label
            name = classes[label] if classes and 0 <= label < len(classes) else str(label)
            color = cmap(i % cmap.N) if cmap.N < 256 else cmap(i / max(1, len(present) - 1))
            ax.scatter(coords[at, 0], coords[at, 1], s=6, color=color, label=name, alpha=0.8, linewidths=0)
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title or "features", 100)), x=0.02, ha="left", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.subplots_adjust(left=0.02, right=0.75, top=0.93, bottom=0.02)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=2, frameon=False)
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
