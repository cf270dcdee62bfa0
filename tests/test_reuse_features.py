"""Feature extraction (issue 12): convkit.reuse.features and `convkit features`, against independent truth.

The truth: a hand-run ``forward_head(forward_features(x), pre_logits=True)`` on hand-normalised pixels;
torchvision's own ResNet-18 run layer by layer up to its pooled features; scikit-learn's PCA on the saved
features; PIL reading the PNG; scikit-learn's LogisticRegression on the features of a trained network.
"""

import json

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from threadpoolctl import threadpool_limits
from torch import nn

import convkit
from convkit.cli.main import main
from convkit.data import ImageTensorDataset, load_default
from convkit.models.weights import load_tensors
from convkit.reuse.features import (
    MAP_SIZE,
    FeatureError,
    cached_features,
    extract_features,
    feature_map,
    load_features,
)


@pytest.fixture(scope="module")
def test_images():
    return load_default("test").subset(range(70))  # 70 = 2 * 32 + 6: full batches and a short one


def test_features_equal_a_hand_run_forward_head(test_images):
    model = convkit.create_model("resnet20", in_channels=1, num_classes=10)
    model.train()  # extraction runs in eval mode (batch-norm running statistics), and restores the mode
    features, labels = extract_features(model, test_images, batch_size=32, progress=False)
    assert model.training
    model.eval()
    x = (test_images.images.float() / 255 - 0.5) / 0.5  # an untrained model's normalisation, by hand
    with torch.no_grad():
        want = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    assert features.shape == (70, 64) and features.dtype == torch.float32  # resnet20's 64 pooled channels
    torch.testing.assert_close(features, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.get_classifier()(features), logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels, test_images.labels) and labels.dtype == torch.int64


def test_trained_model_uses_its_own_normalisation(test_images):
    model = convkit.create_model("fastcnn")
    model.model_cfg = convkit.models.reference.ModelCfg("fastcnn", input_shape=(1, 28, 28), mean=(0.3,),
                                                        std=(0.4,))
    features, _ = extract_features(model, test_images, progress=False)
    x = (test_images.images.float() / 255 - 0.3) / 0.4
    with torch.no_grad():
        want = model.eval().forward_head(model.forward_features(x), pre_logits=True)
    torch.testing.assert_close(features, want, rtol=1e-5, atol=1e-5)


def test_other_modules_give_the_input_of_their_last_linear_as_torchvision_computes_it():
    net = torchvision.models.resnet18(num_classes=7).eval()  # not a zoo classifier: caught by a hook on fc
    images = torch.randn(5, 3, 32, 32)  # float images: used as they are (the data's own transform)
    features, labels = extract_features(net, (images, torch.arange(5)), batch_size=2, progress=False)
    with torch.no_grad():  # torchvision's ResNet.forward, stopped before fc
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        x = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        want = torch.flatten(net.avgpool(x), 1)
    assert features.shape == (5, 512)
    torch.testing.assert_close(features, want, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [0, 1, 2, 3, 4]


def test_cache_loads_instead_of_recomputing(test_images, tmp_path, monkeypatch):
    model = convkit.create_model("fastcnn")
    calls = []
    forward_features = model.forward_features

    def counted(x):
        if x.device.type != "meta":  # real batches only (a meta trace checks the shapes first)
            calls.append(len(x))
        return forward_features(x)

    monkeypatch.setattr(model, "forward_features", counted)
    first = cached_features(model, "a" * 64, test_images, tmp_path, batch_size=32, progress=False)
    assert calls == [32, 32, 6]
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    second = cached_features(model, "a" * 64, test_images, tmp_path, batch_size=32, progress=False)
    assert calls == [32, 32, 6]  # loaded: the model did not run
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    features, labels, meta = load_features(files[0])
    assert meta["classes"] == test_images.classes and meta["source_sha256"] == "a" * 64
    assert files[0].name == f"features-{meta['key']}.safetensors"
    # another source, other data or a damaged file: computed again
    cached_features(model, "b" * 64, test_images, tmp_path, progress=False)
    cached_features(model, "a" * 64, test_images.subset(range(69)), tmp_path, progress=False)
    assert len(calls) == 5 and len(list(tmp_path.glob("*.safetensors"))) == 3
    files[0].write_bytes(b"not a safetensors file")
    again = cached_features(model, "a" * 64, test_images, tmp_path, progress=False)
    assert len(calls) == 6 and torch.equal(again[0], first[0])
    assert load_features(files[0])[2]["key"] == meta["key"]  # replaced by a whole file


def test_bad_data_and_models_are_named(test_images):
    empty = ImageTensorDataset(torch.zeros(0, 1, 28, 28, dtype=torch.uint8), torch.zeros(0), ["a"], "nothing/")
    with pytest.raises(FeatureError, match="nothing/: no images"):
        extract_features(convkit.create_model("fastcnn"), empty, progress=False)
    with pytest.raises(FeatureError, match="1 channel.*'resnet20' takes 3"):
        extract_features(convkit.create_model("resnet20"), test_images, progress=False)
    with pytest.raises(FeatureError, match="no nn.Linear"):
        extract_features(nn.Sequential(nn.Conv2d(1, 2, 3)), test_images, progress=False)


def test_cli_writes_features_and_a_pca_map(tmp_path, capsys):
    out, png = tmp_path / "f.safetensors", tmp_path / "map.png"
    assert main(["features", "fastcnn", "--data", "default", "--split", "test", "--limit", "200", "-o", str(out),
                 "--map", "pca", "--map-png", str(png)]) == 0
    tensors, meta = load_tensors(out)
    features, labels, coords = tensors["features"], tensors["labels"], tensors["map"]
    test = load_default("test")
    assert features.shape == (200, 3136) and coords.shape == (200, 2)
    assert meta["classes"] == test.classes and meta["map"] == "pca" and len(meta["source_sha256"]) == 64
    assert len(set(labels.tolist())) == 10  # drawn at random: every class, not the first 200 files
    from sklearn.decomposition import PCA

    want = PCA(n_components=2).fit_transform(features.double().numpy())
    signs = np.sign((want * coords.numpy()).sum(0))  # a principal axis is defined up to its sign
    np.testing.assert_allclose(coords.numpy(), want * signs, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == MAP_SIZE
    assert "wrote" in capsys.readouterr().out


def test_tsne_map_separates_two_clusters():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (30, 8)), rng.normal(20, 1, (30, 8))]).astype(np.float32)
    with threadpool_limits(1):
        coords = feature_map(features, "tsne")
    a, b = coords[:30].mean(0), coords[30:].mean(0)
    spread = max(coords[:30].std(0).max(), coords[30:].std(0).max())
    assert coords.shape == (60, 2) and np.linalg.norm(a - b) > 3 * spread
    with pytest.raises(FeatureError, match="'umap': expected one of pca, tsne"):
        feature_map(features, "umap")


def test_features_of_a_trained_fastcnn_make_a_good_linear_classifier(tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression

    run = convkit.train(epochs=1, limit=1000, test_limit=300, batch_size=50, quiet=True, seed=0, threads=2,
                        runs_dir=str(tmp_path / "runs"), name="fastcnn-small").run_dir
    train_file, test_file = tmp_path / "train.safetensors", tmp_path / "test.safetensors"
    assert main(["features", str(run), "--split", "train", "--limit", "600", "-o", str(train_file),
                 "--map", "none"]) == 0
    assert main(["features", str(run), "--split", "test", "-o", str(test_file), "--map", "none"]) == 0
    x_train, y_train, meta = load_features(train_file)
    x_test, y_test, _ = load_features(test_file)
    assert len(x_test) == 300 and meta["source"] == str(run) and not (tmp_path / "train.png").exists()
    with threadpool_limits(1):  # a BLAS pool of 2 threads on 2 busy cores is 20x slower
        head = LogisticRegression(max_iter=300).fit(x_train.numpy(), y_train.numpy())
    accuracy = head.score(x_test.numpy(), y_test.numpy())
    print(json.dumps({"linear_probe_accuracy": accuracy}))
    assert accuracy > 0.6  # chance: 0.1 (10 balanced classes)


@pytest.mark.parametrize(("args", "named"), [
    (["runs/no-such-run", "--data", "default"], "runs/no-such-run"),
    (["fastcnn", "--data", "EMPTY"], "EMPTY"),
    (["fastcnn"], "--data"),
])
def test_cli_bad_input_is_one_line_naming_it(args, named, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = [a.replace("EMPTY", str(tmp_path / "empty")) for a in args]
    named = named.replace("EMPTY", str(tmp_path / "empty"))
    assert main(["features", *args, "-o", str(tmp_path / "f.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convkit: error: ") and named in err[0]
    assert not (tmp_path / "f.safetensors").exists()


def test_files_streamed_from_disk_give_the_same_features_and_a_fingerprint_of_their_files(tmp_path):
    from convkit.data import ImageFileDataset, scan_folder
    from convkit.reuse.features import data_fingerprint

    images = load_default("test").subset(range(6))
    for i, (image, label) in enumerate(zip(images.images, images.labels)):
        (tmp_path / f"c{int(label)}").mkdir(exist_ok=True)
        Image.fromarray(image[0].numpy()).save(tmp_path / f"c{int(label)}" / f"{i}.png")
    samples, classes, _ = scan_folder(tmp_path)
    files = ImageFileDataset(samples, classes, str(tmp_path), workers=0)
    model = convkit.create_model("fastcnn", num_classes=len(classes))
    order = [int(p.stem) for p, _ in samples]  # the files' order: by class folder, then name
    features, labels = extract_features(model, files, progress=False)
    want, _ = extract_features(model, (images.images[order], images.labels[order]), progress=False)
    torch.testing.assert_close(features, want)
    before = data_fingerprint(files)
    first = samples[0][0]
    Image.fromarray(255 - images.images[order[0]][0].numpy()).save(first)  # one file changes
    assert data_fingerprint(files) != before


def test_cli_cache_dir_reuses_the_features(tmp_path, capsys, monkeypatch):
    from convkit.reuse import features as module

    args = ["features", "lenet5", "--data", "default", "--split", "test", "--limit", "50", "--map", "none",
            "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "-o", str(tmp_path / "a.safetensors")]) == 2  # lenet5 takes 32x32: fastcnn then
    assert "'lenet5' cannot take its 1x28x28 images: layer features.c5" in capsys.readouterr().err
    args[1] = "fastcnn"
    torch.manual_seed(1)  # the same untrained weights twice: the same SHA-256
    assert main([*args, "-o", str(tmp_path / "a.safetensors")]) == 0
    calls = []
    monkeypatch.setattr(module, "extract_features", lambda *a, **k: calls.append(1))
    torch.manual_seed(1)
    assert main([*args, "-o", str(tmp_path / "b.safetensors")]) == 0
    assert calls == [] and len(list((tmp_path / "cache").iterdir())) == 1
    a, b = load_features(tmp_path / "a.safetensors"), load_features(tmp_path / "b.safetensors")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_cli_adapts_a_3_channel_torchvision_resnet18_to_grey_images(tmp_path, capsys):
    from safetensors.torch import save_file

    net = torchvision.models.resnet18(num_classes=10).eval()
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    out = tmp_path / "f.safetensors"
    assert main(["features", str(weights), "--data", "default", "--split", "test", "--limit", "8", "-o", str(out),
                 "--map", "none"]) == 0
    assert "adapted: input channels 3 -> 1" in capsys.readouterr().err
    features, labels, meta = load_features(out)
    assert meta["adaptations"][0].startswith("input channels 3 -> 1") and features.shape == (8, 512)
    # truth: torchvision's own network on the grey images replicated to 3 channels (the summed first conv's
    # output), normalised with the checkpoint's mean and std averaged over the channels
    from convkit.models.reference import resolve_model

    cfg = resolve_model(str(weights)).model_cfg
    mean, std = cfg.mean_std()
    test = load_default("test")
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:8].sort().values
    x = (test.images[pick].float() / 255 - mean.mean()) / std.mean()
    net.fc = nn.Identity()
    with torch.no_grad():
        want = net(x.expand(-1, 3, -1, -1))
    torch.testing.assert_close(features, want, rtol=1e-4, atol=1e-4)
    assert torch.equal(labels, test.labels[pick])


def test_a_last_linear_that_never_runs_is_named():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.unused = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), nn.Linear(2, 2)

        def forward(self, x):
            return self.body(x)

    with pytest.raises(FeatureError, match=r"last Linear layer \(unused\) did not run"):
        extract_features(Odd(), (torch.rand(3, 1, 2, 2), torch.arange(3)), progress=False)
