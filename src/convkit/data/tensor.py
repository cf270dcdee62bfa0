"""A dataset held in memory as one uint8 tensor, on the training device, iterated in seeded batches.

Holding the images as uint8 (a quarter of float32's size) on the device and augmenting whole batches there
avoids per-image Python and PIL work in the training loop, which dominates the time of small CNNs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from convkit.data.errors import DataFormatError, LabelError
from convkit.utils import shorten


def check_labels(labels: torch.Tensor, num_classes: int, source: str | Sequence[str]) -> None:
    """Refuses labels outside 0..num_classes-1, naming the file that holds the first offending one.

    Args:
        labels: integer labels, shape (N,).
        num_classes: the number of classes the model predicts.
        source: the file the labels came from, or one file per label (an image folder's or CSV's rows).

    Raises:
        LabelError: a label is negative or >= num_classes; the message names the file, the index, the value
            and how many labels are out of range.

    Example:
        >>> check_labels(torch.tensor([0, 3, 9]), 10, "train-labels-idx1-ubyte.gz")   # passes
        >>> check_labels(torch.tensor([0, 12]), 10, "labels.csv")
        Traceback (most recent call last):
            ...
        convkit.data.errors.LabelError: labels.csv: label 12 at index 1 is outside the class range 0..9 ...
    """
    labels = torch.as_tensor(labels)
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad) == 0:
        return
    i = int(bad[0])
    where = source if isinstance(source, str) else source[i]
    raise LabelError(f"{where}: label {int(labels[i])} at index {i} is outside the class range 0..{num_classes - 1} "
                     f"({len(bad)} of {len(labels)} labels are out of range); fix the labels or the number of classes")


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of an epoch: a function of (seed, epoch) only, so a resumed run sees the same order.

    Args:
        n: the number of samples.
        seed: the run's seed.
        epoch: the epoch number.

    Returns:
        A CPU int64 permutation of 0..n-1 (the same on every machine and device).

    Example:
        >>> epoch_permutation(5, seed=0, epoch=3)
        tensor([3, 2, 4, 0, 1])
        >>> torch.equal(epoch_permutation(5, seed=0, epoch=3), epoch_permutation(5, seed=0, epoch=3))
        True
    """
    # SeedSequence mixes (seed, epoch) so neighbouring pairs give unrelated streams.
    state = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(state))


def random_split(dataset, fraction: float, seed: int = 0):
    """(rest, held-out) of a dataset with ``len``, ``subset`` and ``source``: a seeded random `fraction` of its
    samples held out (at least one, and at least one kept), each part in the original order (the detection and
    segmentation sets' ``split``; image classification holds out per class, `ImageTensorDataset.split`).

    Raises:
        ValueError: `fraction` outside (0, 1).
        DataFormatError: fewer than 2 samples.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.zeros(10), ["a"], "toy")
        >>> [len(part) for part in random_split(ds, 0.2)]
        [8, 2]
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {shorten(fraction)}")
    n = len(dataset)
    if n < 2:
        raise DataFormatError(f"{dataset.source}: {n} image(s), too few to hold a part out for validation; "
                              "give validation data of its own")
    k = min(max(round(n * fraction), 1), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return dataset.subset(order[k:].sort().values), dataset.subset(order[:k].sort().values)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 images (N, C, H, W), on the [0, 1] scale, as float32.

    Chunks of float64 sums: exact enough for 60,000 images and never a float copy of the whole set.

    Example:
        >>> mean, std = channel_stats(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
        >>> mean.tolist(), std.tolist()
        ([0.5], [0.5])
    """
    sums = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for chunk in images.split(4096):
        x = chunk.double().div_(255).transpose(0, 1).flatten(1)
        sums += x.sum(1).cpu()
        squares += x.square().sum(1).cpu()
    count = max(1, images[:, 0].numel())
    mean = sums / count
    return mean.float(), (squares / count - mean.square()).clamp_min(1e-12).sqrt().float()


class EpochBatches:
    """One epoch's batches of a dataset, in the order fixed by (seed, epoch); `position` counts the samples served.

    This class keeps the order and the position; `ImageTensorDataset` indexes its tensor with each batch's
    slice of the order, `ImageFileDataset` hands the same slices to DataLoader workers (`StreamBatches`), so
    both serve the same batches. Save `state_dict()` with a checkpoint;
    `dataset.batches(..., epoch=s["epoch"], start=s["position"])` then serves exactly the batches still to come.
    """

    def __init__(self, dataset, batch_size: int, shuffle: bool, seed: int, epoch: int, start: int,
                 drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.dataset, self.batch_size, self.seed, self.epoch = dataset, batch_size, seed, epoch
        self.shuffle, self.drop_last, self.position = shuffle, drop_last, start
        n = len(dataset)
        self._order = epoch_permutation(n, seed, epoch) if shuffle else torch.arange(n)  # CPU
        self._end = n - n % batch_size if drop_last else n

    def __len__(self) -> int:
        """Batches still to come."""
        return max(0, -(-(self._end - self.position) // self.batch_size))

    def _slices(self, order: torch.Tensor) -> list[torch.Tensor]:
        """The sample indices of each batch still to come: slices of `order` (a copy of the order anywhere)."""
        return [order[b:min(b + self.batch_size, self._end)]
                for b in range(self.position, self._end, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.dataset.images, self.dataset.labels
        for index in self._slices(self._order.to(images.device)):  # one copy of the order, not one per batch
            self.position += len(index)
            yield images[index], labels[index]

    def state_dict(self) -> dict:
        """Where this epoch stands: {"seed", "epoch", "position"}."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}


class ImageTensorDataset(torch.utils.data.Dataset):
    """Images as one uint8 tensor (N, C, H, W) with int64 labels, class names and where they came from.

    Args:
        images: uint8, shape (N, C, H, W).
        labels: integer labels, shape (N,).
        classes: class names, index = label.
        source: the file or folder the data came from (used in error messages).
        sample_sources: optional file of each sample (image folders, CSVs), named by `check_labels`.
        mean, std: per-channel statistics on the [0, 1] scale; computed from the images when not given.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
        ...                         ["no", "yes"], "toy")
        >>> ds
        ImageTensorDataset(4 images of (1, 28, 28), 2 classes, device cpu, source 'toy')
        >>> for x, y in ds.batches(2, seed=0):      # ds.to("cuda") first puts the batches on the GPU
        ...     print(x.shape, y)
        torch.Size([2, 1, 28, 28]) tensor([1, 1])
        torch.Size([2, 1, 28, 28]) tensor([0, 0])
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], source: str,
                 sample_sources: Sequence[str] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"{source}: expected uint8 images of shape (N, C, H, W), "
                             f"got {images.dtype} {tuple(images.shape)}")
        if len(labels) != len(images):
            raise ValueError(f"{source}: {len(labels)} labels for {len(images)} images")
        self.images, self.labels = images, torch.as_tensor(labels).long().to(images.device)
        self.classes, self.source = list(classes), str(source)
        self.sample_sources = list(sample_sources) if sample_sources is not None else None
        self._mean = torch.tensor(mean, dtype=torch.float32) if mean is not None else None
        self._std = torch.tensor(std, dtype=torch.float32) if std is not None else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def __repr__(self) -> str:
        return (f"ImageTensorDataset({len(self)} images of {tuple(self.image_shape)}, {self.num_classes} classes, "
                f"device {self.device}, source {self.source!r})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> torch.Size:
        """(C, H, W)."""
        return self.images.shape[1:]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def _stats(self) -> None:
        self._mean, self._std = channel_stats(self.images)

    @property
    def mean(self) -> torch.Tensor:
        """Per-channel mean on the [0, 1] scale (computed once; give the training set's to a test set)."""
        if self._mean is None:
            self._stats()
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-channel standard deviation on the [0, 1] scale."""
        if self._std is None:
            self._stats()
        return self._std

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images, or floats on the 0..255 scale (after augmentation), to `(x / 255 - mean) / std`.

        Args:
            images: shape (N, C, H, W).

        Returns:
            float32 images on the same device.

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> x = ds.normalize(ds.images[:8])
            >>> x.dtype, x.shape, ds.mean, ds.std
            (torch.float32, torch.Size([8, 1, 28, 28]), tensor([0.2884]), tensor([0.3531]))
        """
        mean = self.mean.to(images.device).view(1, -1, 1, 1)
        std = self.std.to(images.device).view(1, -1, 1, 1)
        return (images.float() / 255 - mean) / std

    def to(self, device: str | torch.device) -> ImageTensorDataset:
        """The same dataset with its tensors on `device` (statistics and names shared).

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> ds.to("meta").images.device           # "cuda" on a GPU machine
            device(type='meta')
        """
        return self._with(self.images.to(device), self.labels.to(device), None)

    def _with(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None) -> ImageTensorDataset:
        sources = self.sample_sources
        if sources is not None and index is not None:
            sources = [sources[i] for i in index.tolist()]
        ds = ImageTensorDataset(images, labels, self.classes, self.source, sources)
        ds._mean, ds._std = self._mean, self._std
        return ds

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageTensorDataset:
        """The samples at `index`, in that order (statistics carried over, not recomputed).

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> first_hundred = ds.subset(range(100))
            >>> len(first_hundred), torch.equal(first_hundred.images, ds.images[:100])
            (100, True)
        """
        index = torch.as_tensor(index, dtype=torch.long)
        i = index.to(self.device)
        return self._with(self.images[i], self.labels[i], index)

    def split(self, fraction: float, seed: int = 0) -> tuple[ImageTensorDataset, ImageTensorDataset]:
        """Holds out `fraction` of every class (stratified, seeded), e.g. for validation.

        Args:
            fraction: the share held out, 0 < fraction < 1.
            seed: the seed of the choice.

        Returns:
            (the rest, the held-out part), each in the original order.

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> train, val = ds.split(0.1, seed=0)
            >>> len(train), len(val)
            (900, 100)
        """
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        g = torch.Generator().manual_seed(seed)
        labels = self.labels.cpu()
        held = []
        for c in labels.unique().tolist():
            members = (labels == c).nonzero().flatten()
            members = members[torch.randperm(len(members), generator=g)]
            held.append(members[:round(len(members) * fraction)])
        mask = torch.zeros(len(self), dtype=torch.bool)
        mask[torch.cat(held)] = True
        return self.subset(torch.arange(len(self))[~mask]), self.subset(torch.arange(len(self))[mask])

    def class_counts(self) -> torch.Tensor:
        """Samples per class, shape (num_classes,)."""
        return torch.bincount(self.labels.cpu().clamp_min(0), minlength=self.num_classes)

    def check_labels(self, num_classes: int | None = None) -> None:
        """Refuses labels outside the class range, naming the offending file (see `check_labels`).

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> ds.check_labels(10)                     # passes: 10 classes, labels 0..9
            >>> ds.check_labels(5)
            Traceback (most recent call last):
                ...
            convkit.data.errors.LabelError: fashion-mnist-small (built in, test): label 8 at index 3 is ...
        """
        check_labels(self.labels.cpu(), num_classes or self.num_classes, self.sample_sources or self.source)

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0, start: int = 0,
                drop_last: bool = False) -> EpochBatches:
        """One epoch of (uint8 images, int64 labels) batches on the dataset's device.

        Args:
            batch_size: samples per batch.
            shuffle: a seeded permutation per epoch (else the stored order).
            seed: the run's seed; with `epoch` it fixes the order.
            epoch: the epoch number.
            start: the position in the epoch to resume from (see `EpochBatches.state_dict`).
            drop_last: leave out a last, smaller batch.

        Returns:
            An `EpochBatches` iterable whose `position` says how far the epoch has gone.

        Example:
            >>> ds = convkit.data.load_default("test")
            >>> model = convkit.create_model("fastcnn")
            >>> for images, labels in ds.batches(128, seed=0, epoch=0):
            ...     logits = model(ds.normalize(images))
            >>> logits.shape                            # the last batch: 1000 = 7 * 128 + 104
            torch.Size([104, 10])
        """
        return EpochBatches(self, batch_size, shuffle, seed, epoch, start, drop_last)
