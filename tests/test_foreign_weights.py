"""Foreign weights (issue 12): torchvision/timm state dicts in the zoo's twins, read without unpickling.

The truth is torchvision's (and timm's) own models: their random weights, saved as .safetensors and .pth, give
the same outputs in the zoo twin. Named torchvision weights go through torch.hub's real download code, against
a local HTTP server on 127.0.0.1 (nothing leaves the machine).
"""

import functools
import hashlib
import http.server
import pickle
import re
import threading
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models._api import Weights, WeightsEnum
from torchvision.transforms._presets import ImageClassification

from convkit.models import (
    CheckpointError,
    WeightsDownloadError,
    create_model,
    load_foreign,
    match_state_dict,
    read_state_dict,
    resolve_model,
    torchvision_weights,
)
from convkit.models._registry import _skip_initialisation
from convkit.models.foreign import MIRROR_ENV, detect_arch


def _randomise(model):
    # BN at its initial state is the identity in eval mode, and GoogLeNet's init (std 0.01) makes the output
    # nearly independent of the input: He-uniform weights and random BN statistics make the comparison bite.
    torch.manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.uniform_(-1, 1).mul_((6 / m.weight[0].numel()) ** 0.5)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _torchvision(name, **kwargs):
    """torchvision's model `name` (weights=None) with random weights (_randomise; its own init is skipped:
    seconds for vgg16's 138M weights on two cores, and overwritten anyway)."""
    if name == "googlenet":  # aux_logits=True by default: the file holds the auxiliary heads too
        kwargs = {"init_weights": True, **kwargs}
    with _skip_initialisation():
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    return _randomise(model)


def _same_outputs(ours, theirs, size=64, expected=None):
    """ours(x) == theirs(x) within 1e-5 on a fixed random batch; returns theirs(x) for the next comparison."""
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = theirs(x) if expected is None else expected, ours.eval()(x)
    assert (expected[0] - expected[1]).abs().max() > 1e-3 * expected.abs().max()  # the inputs matter
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    return expected


# --- the truth: torchvision's random weights give torchvision's outputs -----------------------------------

TWINS = [("resnet18", "resnet18", 64), ("vgg16", "vgg16", 32), ("alexnet", "alexnet", 64),
         ("googlenet", "googlenet_bn", 64)]


@pytest.mark.parametrize("tv_name, twin, size", TWINS, ids=[t[0] for t in TWINS])
def test_torchvision_weights_in_the_zoo_twin_give_torchvision_outputs(tmp_path, tv_name, twin, size):
    theirs = _torchvision(tv_name)
    state = theirs.state_dict()
    files = [tmp_path / f"{tv_name}.safetensors", tmp_path / f"{tv_name}.pth"]
    save_file({k: v.contiguous() for k, v in state.items()}, files[0])
    torch.save(state, files[1])
    del state
    expected = None
    for file in files:
        ours, match = load_foreign(file)  # arch detected from the names and shapes
        assert (match.arch, match.ok, match.missing, match.unexpected, match.head) == (twin, True, [], [], [])
        assert ours.model_cfg.source == "checkpoint" and ours.model_cfg.checkpoint == file
        expected = _same_outputs(ours, theirs, size, expected)
        del ours


def test_timm_resnets_have_torchvision_names_and_load():
    timm = pytest.importorskip("timm")
    for name in ("resnet18", "resnet50"):
        with _skip_initialisation():
            theirs = _randomise(timm.create_model(name, pretrained=False, num_classes=7))
        ours, match = load_foreign(theirs.state_dict(), name=f"timm {name}")
        assert (match.arch, match.ok, ours.num_classes) == (name, True, 7)
        _same_outputs(ours, theirs, 32)


# --- head and input adaptation ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> tuple[Path, nn.Module]:
    """A random torchvision resnet18 saved as .safetensors: (the file, the model)."""
    theirs = _torchvision("resnet18")
    path = tmp_path_factory.mktemp("tv") / "resnet18.safetensors"
    save_file(theirs.state_dict(), path)
    return path, theirs


def test_another_class_count_reinitialises_the_head_and_keeps_the_body(resnet18_file):
    path, theirs = resnet18_file
    ours, match = load_foreign(path, num_classes=10)
    assert match.ok and match.notes == ["head re-initialised for 10 classes (the weights have 1000)"]
    assert [k for k, *_ in match.head] == ["fc.weight", "fc.bias"]
    assert "head: re-initialised" in match.table()
    x = torch.randn(2, 3, 64, 64)
    body = nn.Sequential(*list(theirs.children())[:-2])  # torchvision's resnet up to layer4
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_features(x), body(x), rtol=0, atol=1e-5)
        assert ours(x).shape == (2, 10)


def test_one_channel_input_sums_the_first_convolution(resnet18_file):
    path, theirs = resnet18_file
    ours, match = load_foreign(path, in_channels=1)
    assert match.notes == ["first convolution conv1: 3 input channels -> 1 (summed)"]
    assert ours.model_cfg.input_shape == (1, 224, 224)
    gray = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # a grey image through the summed kernel = the same image in 3 equal channels
        torch.testing.assert_close(ours(gray), theirs(gray.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_one_channel_weights_replicate_into_three_channels():
    theirs = create_model("resnet20", in_channels=1, num_classes=10).eval()
    ours, match = load_foreign(theirs.state_dict(), in_channels=3)
    assert match.arch == "resnet20" and "replicated" in match.notes[0]
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(gray.expand(-1, 3, -1, -1)), theirs(gray), rtol=0, atol=1e-5)


# --- mismatches -------------------------------------------------------------------------------------------

def test_match_lists_missing_unexpected_and_shapes_in_one_aligned_table():
    model = create_model("resnet20", num_classes=10)
    state = dict(model.state_dict())
    del state["layer1.0.bn1.running_var"]
    state["extra.weight"] = torch.zeros(3)
    state["layer2.0.conv1.weight"] = torch.zeros(32, 16, 5, 5)
    state["fc.weight"], state["fc.bias"] = torch.zeros(4, 64), torch.zeros(4)
    match = match_state_dict(model, state, "w.pth")
    assert match.missing == [("layer1.0.bn1.running_var", (16,))]
    assert match.unexpected == [("extra.weight", (3,))]
    assert match.mismatched == [("layer2.0.conv1.weight", (32, 16, 3, 3), (32, 16, 5, 5))]
    assert match.head == [("fc.weight", (10, 64), (4, 64)), ("fc.bias", (10,), (4,))]
    assert not match.ok
    lines = match.table().splitlines()
    rows = [line for line in lines if line.split()[0] in {"key", "layer1.0.bn1.running_var", "extra.weight",
                                                          "layer2.0.conv1.weight", "fc.weight", "fc.bias"}]
    assert len(rows) == 6
    for column in ("problem", "model", "weights"):  # every row's column starts where the header's does
        start = lines[0].index(column)
        assert all(row[start - 2:start] == "  " and row[start] != " " for row in rows)
    assert lines[-1].startswith(f"{match.total - 1 - 1 - 2} of {match.total} tensors fit")
    del state["extra.weight"], state["layer2.0.conv1.weight"]
    state["layer2.0.conv1.weight"] = model.state_dict()["layer2.0.conv1.weight"]
    state["layer1.0.bn1.running_var"] = torch.ones(16)
    assert match_state_dict(model, state).ok  # only the head's class count differs: not an architecture error


def test_weights_of_another_architecture_stop_with_the_table_naming_the_file(resnet18_file):
    path, _ = resnet18_file
    with pytest.raises(CheckpointError) as err:
        load_foreign(path, arch="resnet34")
    text = str(err.value)
    assert text.startswith(f"{path}: the weights do not fit resnet34:")
    assert re.search(r"layer1\.2\.conv1\.weight +missing +\[64, 64, 3, 3\] +-", text)
    # a resnet18 without its last stage (2 blocks x (2 convs + 2 BNs x 5 tensors) + a projection conv and BN: 30
    # tensors): no zoo model has exactly these; the closest one says what differs
    cut = {k: v for k, v in read_state_dict(path).items() if not k.startswith("layer4.")}
    torch.save(cut, path.parent / "cut.pt")
    with pytest.raises(CheckpointError, match=r"cut\.pt: the weights fit no zoo model; the closest is resnet18 "
                       r"\(92 of its 122 tensors fit\):\n.*\nlayer4\.0\.conv1\.weight +missing +\[512, 256, 3, 3\]"):
        load_foreign(path.parent / "cut.pt")
    # a network the zoo has no twin of
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 30 * 30, 2))
    torch.save(other.state_dict(), path.parent / "mine.pt")
    with pytest.raises(CheckpointError, match=r"mine\.pt: the weights fit no zoo model: no zoo model has any of "
                       r"its 4 tensors \(0\.weight \[5, 3, 3, 3\], 0\.bias \[5\], 3\.weight"):
        load_foreign(path.parent / "mine.pt")


def test_detect_arch_tells_close_variants_apart():
    with torch.device("meta"):
        for name in ("resnet50", "resnext50_32x4d", "wide_resnet50_2", "vgg16", "vgg16_bn", "vgg19"):
            state = getattr(torchvision.models, name)().state_dict()
            assert detect_arch(state)[:2] == (name, {})


# --- reading files: nothing but tensors -------------------------------------------------------------------

class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_weights_only_refuses_is_refused_and_nothing_runs(tmp_path):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Payload(probe)))
    assert probe.exists(), "the payload must be live for this test to mean anything"
    marker = tmp_path / "pwned"
    raw, zipped = tmp_path / "raw.pth", tmp_path / "zipped.pt"
    raw.write_bytes(pickle.dumps({"fc.weight": _Payload(marker)}))
    torch.save({"fc.weight": _Payload(marker)}, zipped)  # torch.save's zip format, the payload inside
    assert not marker.exists()
    for path in (raw, zipped):
        for load in (read_state_dict, load_foreign, resolve_model):
            with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: refused: .*stopped at (Unsupported "
                               "operand|Unsupported global: GLOBAL io.open).*nothing in the file was run"):
                load(path)
    assert not marker.exists()


def test_containers_and_prefixes_are_unwrapped(tmp_path):
    weights = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    cases = {"lightning.pt": {"epoch": 3, "state_dict": weights}, "ddp.pth": {f"module.{k}": v for k, v in weights.items()},
             "train.bin": {"model": {f"module.{k}": v for k, v in weights.items()}, "optimizer": {"lr": 0.1}}}
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        state = read_state_dict(tmp_path / name)
        assert list(state) == list(weights) and all(torch.equal(state[k], weights[k]) for k in weights)


def test_bad_files_say_what_was_found(tmp_path):
    torch.save({"fc.weight": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"mixed\.pth: expected a state dict .*'?epoch'? holds int 3"):
        read_state_dict(tmp_path / "mixed.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match=r"list\.pt: expected a state dict .*found list"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "w.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"w\.ckpt: a weights file must be \.safetensors.*'\.ckpt'"):
        read_state_dict(tmp_path / "w.ckpt")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"junk\.pth: refused: .* stopped at Unsupported operand 110"):
        read_state_dict(tmp_path / "junk.pth")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "list.pt").read_bytes()[:-30])  # a truncated zip
    with pytest.raises(CheckpointError, match=r"cut\.pt: not a file torch\.save wrote, or a damaged one"):
        read_state_dict(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    # junk reaches the weights-only unpickler as KeyError, IndexError, ...: always one CheckpointError naming it
    generator = torch.Generator().manual_seed(0)
    for i, junk in enumerate([b"junk\n", *(bytes(torch.randint(0, 256, (n,), generator=generator).tolist())
                                         for n in (1, 7, 64, 300, 300, 300))]):
        (tmp_path / f"j{i}.pth").write_bytes(junk)
        with pytest.raises(CheckpointError, match=rf"j{i}\.pth: (refused|not a file torch\.save wrote)"):
            read_state_dict(tmp_path / f"j{i}.pth")


def test_the_cli_names_a_junk_weights_file(tmp_path, capsys):
    from convkit.cli.main import main

    (tmp_path / "bad.pth").write_bytes(b"junk\n")
    assert main(["summary", str(tmp_path / "bad.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convkit: error: ") and "bad.pth" in err and len(err.strip().splitlines()) == 1


def test_resolve_model_loads_a_foreign_state_dict(resnet18_file):
    path, theirs = resnet18_file
    ours = resolve_model(path)
    assert ours.model_cfg.name == "resnet18" and ours.model_cfg.trained and not ours.training
    _same_outputs(ours, theirs)
    assert resolve_model(path, num_classes=4)(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


# --- named torchvision weights: torch.hub's download and cache, offline and against a local server ---------

URL_FILE = "resnet18-f37072fd.pth"  # torchvision's name for resnet18.IMAGENET1K_V1: its SHA-256 starts f37072fd


def test_a_named_weight_in_the_cache_loads_without_the_network(resnet18_file, tmp_path, monkeypatch):
    _, theirs = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")  # were it to download, it would fail
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(theirs.state_dict(), tmp_path / "hub" / "checkpoints" / URL_FILE)
    ours, match = torchvision_weights("resnet18.IMAGENET1K_V1")
    assert match.arch == "resnet18" and match.ok
    cfg = ours.model_cfg
    assert len(cfg.classes) == 1000 and cfg.classes[0] == "tench" and cfg.mean == (0.485, 0.456, 0.406)
    assert cfg.checkpoint == tmp_path / "hub" / "checkpoints" / URL_FILE
    _same_outputs(ours, theirs)


def test_offline_without_the_file_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsDownloadError) as err:
        torchvision_weights("resnet18.IMAGENET1K_V1", mirror="http://127.0.0.1:9")  # nothing listens on port 9
    text = str(err.value)
    assert f"https://download.pytorch.org/models/{URL_FILE} at {tmp_path}/hub/checkpoints/{URL_FILE}" in text
    assert "could not download resnet18.IMAGENET1K_V1 from http://127.0.0.1:9/models/" in text
    with pytest.raises(Exception, match="torchvision's resnet18 has IMAGENET1K_V1, DEFAULT, not 'V9'"):
        torchvision_weights("resnet18.V9")


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/www: (its base URL, the folder)."""
    root = tmp_path / "www"
    (root / "models").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_download_from_a_mirror_checks_the_hash(server, tmp_path, monkeypatch):
    base, root = server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    theirs = _torchvision("resnet18", num_classes=10)
    fixture = tmp_path / "w.pth"
    torch.save(theirs.state_dict(), fixture)
    digest = hashlib.sha256(fixture.read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    fixture.rename(root / "models" / name)

    class ResNet18_Weights(WeightsEnum):  # a weight torchvision does not have, with the hash of our fixture
        TEST = Weights(url=f"https://download.pytorch.org/models/{name}",
                       transforms=functools.partial(ImageClassification, crop_size=224),
                       meta={"categories": [f"c{i}" for i in range(10)]})

    monkeypatch.setenv(MIRROR_ENV, base)
    ours, match = torchvision_weights(ResNet18_Weights.TEST)
    cached = tmp_path / "home" / "hub" / "checkpoints" / name
    assert cached.read_bytes() == (root / "models" / name).read_bytes()
    assert match.arch == "resnet18" and ours.model_cfg.classes[-1] == "c9"
    _same_outputs(ours, theirs)
    # the same bytes under torchvision's real name: the hash prefix f37072fd does not match, nothing is kept
    (root / "models" / name).rename(root / "models" / URL_FILE)
    with pytest.raises(WeightsDownloadError, match=f"does not match its checksum.*{digest}"):
        torchvision_weights("resnet18.IMAGENET1K_V1", mirror=base)
    assert sorted(p.name for p in cached.parent.iterdir()) == [name]
