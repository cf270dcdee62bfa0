"""Downloads against a local HTTP server on 127.0.0.1: checksums, atomic files, mirrors, how-to-get-it messages."""

import functools
import gzip
import hashlib
import http.server
import tarfile
import threading

import pytest
import torch
from test_data_cifar import write_cifar10

from convkit.data import (
    REGISTRY,
    DatasetNotFoundError,
    DownloadError,
    NamedDataset,
    download,
    load_dataset,
    load_named,
    write_idx,
)
from convkit.data import named as named_module


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/www; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path, monkeypatch):
    """No test reads or writes the real ~/.cache or /usr/share/datasets."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    monkeypatch.setattr(named_module, "SYSTEM_ROOTS", (tmp_path / "system",))


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def toy_idx(www, n=6):
    """A Fashion-MNIST-like pair of files per split on the server; returns the spec's files and the truth."""
    images = torch.randint(0, 256, (n, 5, 5), dtype=torch.uint8)
    labels = torch.arange(n, dtype=torch.uint8) % 3
    files = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        a = write_idx(www / f"{prefix}-images-idx3-ubyte.gz", images)
        b = write_idx(www / f"{prefix}-labels-idx1-ubyte.gz", labels)
        files[split] = ((a.name, md5(a)), (b.name, md5(b)))
    return files, images, labels


def no_partial_files(folder) -> bool:
    return not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def test_named_dataset_is_downloaded_verified_and_loaded(server, tmp_path, capsys):
    www, url = server
    files, images, labels = toy_idx(www)
    spec = NamedDataset("toy", "idx", ("a", "b", "c"), (url,), files)
    ds = load_named(spec, "train", data_dir=tmp_path / "data", download=True, progress=True)
    assert torch.equal(ds.images[:, 0], images) and ds.labels.tolist() == labels.tolist() and ds.classes[2] == "c"
    got = sorted(p.name for p in (tmp_path / "data" / "toy").iterdir())
    assert got == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # only the split asked for
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar ran
    assert len(load_named(spec, "train", data_dir=tmp_path / "data")) == 6  # found now, no download needed


def test_wrong_checksum_is_refused_and_leaves_no_file(server, tmp_path):
    www, url = server
    files, _, _ = toy_idx(www)
    bad = {s: ((f[0][0], "0" * 32), f[1]) for s, f in files.items()}
    spec = NamedDataset("toy", "idx", ("a", "b", "c"), (url,), bad)
    with pytest.raises(DatasetNotFoundError, match="md5 checksum mismatch: expected 0{32}, got [0-9a-f]{32}"):
        load_named(spec, "train", data_dir=tmp_path / "data", download=True, progress=False)
    assert no_partial_files(tmp_path / "data")
    target = tmp_path / "direct" / "f.gz"
    with pytest.raises(DownloadError, match="sha256 checksum mismatch"):
        download(url + "train-images-idx3-ubyte.gz", target, sha256="f" * 64, progress=False)
    assert no_partial_files(tmp_path / "direct")


def test_sha256_of_the_downloaded_bytes_is_checked(server, tmp_path):
    www, url = server
    (www / "blob.bin").write_bytes(b"x" * 300_000)
    want = hashlib.sha256(b"x" * 300_000).hexdigest()
    path = download(url + "blob.bin", tmp_path / "d" / "blob.bin", sha256=want, progress=True)
    assert path.read_bytes() == b"x" * 300_000 and [p.name for p in path.parent.iterdir()] == ["blob.bin"]


def test_a_failing_mirror_falls_back_to_the_next(server, tmp_path):
    www, url = server
    files, _, _ = toy_idx(www)
    spec = NamedDataset("toy", "idx", ("a", "b", "c"), (url + "missing/", url), files)
    assert len(load_named(spec, "test", data_dir=tmp_path / "data", download=True, progress=False)) == 6


def test_unreachable_server_says_where_to_get_the_files_and_where_to_put_them(tmp_path):
    spec = NamedDataset("toy", "idx", ("a",), ("http://127.0.0.1:1/",),
                        {"train": (("train-images-idx3-ubyte.gz", "1" * 32), ("train-labels-idx1-ubyte.gz", "2" * 32))},
                        "https://example.org/toy")
    with pytest.raises(DatasetNotFoundError) as err:
        load_named(spec, "train", data_dir=tmp_path / "data", download=True, progress=False)
    text = str(err.value)
    for needed in ("download failed", "cannot download", "http://127.0.0.1:1/train-images-idx3-ubyte.gz",
                   "1" * 32, "train-labels-idx1-ubyte.gz", f"put the files (gzipped or not) into {tmp_path / 'data' / 'toy'}",
                   "https://example.org/toy"):
        assert needed in text, needed
    assert no_partial_files(tmp_path / "data")


def test_offline_without_download_lists_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion-mnist", "test", data_dir=tmp_path / "d")
    text = str(err.value)
    assert str(tmp_path / "d" / "fashion-mnist") in text and str(tmp_path / "system" / "fashion-mnist") in text
    assert "download=True" in text and "t10k-images-idx3-ubyte.gz" in text
    assert "bef4ecab320f06d8554ea6380940ec79" in text  # the published md5 (torchvision's FashionMNIST.resources)
    assert "fashion-mnist.s3-website.eu-central-1.amazonaws.com" in text
    with pytest.raises(DatasetNotFoundError, match="not a dataset name .* Did you mean: fashion-mnist"):
        load_dataset("fashon-mnist")


def test_system_path_and_environment_variable_are_searched(tmp_path, monkeypatch):
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    debian = tmp_path / "system" / "fashion-mnist"  # as Debian's dataset-fashion-mnist installs it
    debian.mkdir(parents=True)
    write_idx(debian / "t10k-images-idx3-ubyte.gz", images)
    write_idx(debian / "t10k-labels-idx1-ubyte.gz", torch.tensor([9, 0], dtype=torch.uint8))
    ds = load_dataset("fashion_mnist", "test")
    assert ds.classes[ds.labels[0]] == "Ankle boot" and ds.source == str(debian)
    env = tmp_path / "env" / "fashion-mnist"
    env.mkdir(parents=True)
    (env / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress((debian / "t10k-images-idx3-ubyte.gz").read_bytes()))
    (env / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((debian / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    monkeypatch.setenv("CONVKIT_DATA", str(tmp_path / "env"))
    assert load_dataset("fashion-mnist", "test").source == str(env)  # the environment comes before the system


def test_cifar_archive_is_downloaded_extracted_and_removed(server, tmp_path):
    www, url = server
    write_cifar10(tmp_path / "build" / "cifar-10-batches-py")
    archive = www / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "build" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    spec = NamedDataset("cifar10", "cifar10", REGISTRY["cifar10"].classes, (url,),
                        {s: ((archive.name, md5(archive)),) for s in ("train", "test")})
    ds = load_named(spec, "test", data_dir=tmp_path / "data", download=True, progress=False)
    assert len(ds) == 3 and ds.classes[0] == "airplane"
    assert sorted(p.name for p in (tmp_path / "data" / "cifar10").iterdir()) == ["cifar-10-batches-py"]


def test_registry_matches_torchvisions_published_sources():
    datasets = pytest.importorskip("torchvision.datasets")
    for name, cls in (("mnist", datasets.MNIST), ("fashion-mnist", datasets.FashionMNIST)):
        ours = REGISTRY[name]
        assert ours.files["train"] + ours.files["test"] == tuple(tuple(r) for r in cls.resources)
        assert ours.mirrors == tuple(cls.mirrors)
    for name, cls in (("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)):
        ours = REGISTRY[name]
        assert ours.mirrors[0] + ours.files["train"][0][0] == cls.url
        assert ours.files["test"][0] == (cls.filename, cls.tgz_md5)
