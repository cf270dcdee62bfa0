"""Dense, normalisation, dropout, activations: lazy building, flattening and the papers' formulas."""

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

from convkit.layers.base import NotBuiltError, is_built
from convkit.layers.core import (
    ACTIVATIONS,
    BatchNorm1d,
    BatchNorm2d,
    Dense,
    Dropout,
    Flatten,
    LocalResponseNorm,
    Softmax,
    get_activation,
)
from convkit.layers.shapes import ShapeError


def test_dense_flattens_feature_maps_and_builds_lazily():
    fc = Dense(7, activation="relu")
    assert fc.in_features is None and fc.in_channels is None and not is_built(fc)
    assert list(fc.parameters()) == []
    fc.build((3, 4, 5))
    assert is_built(fc) and fc.in_features == fc.in_channels == 60 and fc.weight.shape == (7, 60)
    x = torch.randn(2, 3, 4, 5)
    expected = torch.relu(x.reshape(2, 60) @ fc.weight.T + fc.bias)
    torch.testing.assert_close(fc(x), expected)
    torch.testing.assert_close(fc(x.reshape(2, 60)), expected)
    assert isinstance(fc, nn.Linear) and fc.units == fc.out_features == 7
    assert list(fc.state_dict()) == ["weight", "bias"]


def test_dense_built_at_once_matches_nn_linear():
    ours, theirs = Dense(4, in_features=6, bias=False), nn.Linear(6, 4, bias=False)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours.bias is None and "bias=False" in repr(ours)


def test_dense_keeps_activation_mode_and_hooks_through_build():
    fc = Dense(3, activation="sigmoid").eval()
    calls = []
    fc.register_forward_pre_hook(lambda module, args: calls.append(1))
    fc.build((5,))
    y = fc(torch.randn(2, 5))
    assert not fc.training and calls == [1] and ((y > 0) & (y < 1)).all()


def test_dense_output_shape_and_errors():
    assert Dense(10).output_shape((16, 5, 5)) == (10,)
    assert Dense(10, in_features=400).output_shape((16, 5, 5)) == (10,)
    with pytest.raises(ShapeError, match="expects 400 input features, got 256"):
        Dense(10, in_features=400).output_shape((16, 4, 4))
    with pytest.raises(NotBuiltError, match=r"in_features.*build\(input_shape\)"):
        Dense(10)(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="units"):
        Dense(0)


def lrn_by_hand(a: np.ndarray, n: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Krizhevsky et al. 2012, section 3.3, written out over the channel axis."""
    channels = a.shape[1]
    b = np.empty_like(a)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * (a[:, lo : hi + 1] ** 2).sum(axis=1)) ** beta
    return b


def test_lrn_follows_the_papers_formula():
    a = 30 * torch.randn(2, 9, 3, 4, dtype=torch.float64)  # large activations: alpha vs alpha/n matters
    expected = lrn_by_hand(a.numpy(), n=5, alpha=1e-4, beta=0.75, k=2.0)
    ours = LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    np.testing.assert_allclose(ours(a).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(LocalResponseNorm()(a).numpy(), expected, rtol=1e-12)  # AlexNet's defaults
    caffe = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a).numpy()
    assert np.abs(caffe - expected).max() > 1e-2 * np.abs(expected).max()  # torch's alpha/n is different


def test_lrn_attributes_and_shape():
    lrn = LocalResponseNorm(3, alpha=2e-4)
    assert lrn.paper_alpha == 2e-4 and lrn.alpha == pytest.approx(6e-4) and lrn.size == 3
    assert isinstance(lrn, nn.LocalResponseNorm) and "alpha=0.0002" in repr(lrn)
    assert lrn.output_shape((8, 5, 5)) == (8, 5, 5)
    with pytest.raises(ShapeError):
        lrn.output_shape((8,))
    with pytest.raises(ValueError, match="size"):
        LocalResponseNorm(0)


EXPECTED_TYPES = {
    "relu": nn.ReLU, "relu6": nn.ReLU6, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
    "softplus": nn.Softplus, "mish": nn.Mish, "hardswish": nn.Hardswish, "softmax": nn.Softmax,
    "identity": nn.Identity, "linear": nn.Identity, "none": nn.Identity,
}


def test_activation_registry():
    assert set(ACTIVATIONS) == set(EXPECTED_TYPES)
    for name, cls in EXPECTED_TYPES.items():
        first, second = get_activation(name), get_activation(name.upper())
        assert type(first) is cls and type(second) is cls and first is not second
        assert not getattr(first, "inplace", False)
    assert get_activation("leaky_relu").negative_slope == 0.01
    assert get_activation("softmax").dim == 1
    assert type(get_activation("Leaky-ReLU")) is nn.LeakyReLU


def test_get_activation_specs():
    assert type(get_activation(None)) is nn.Identity
    module = nn.PReLU()
    assert get_activation(module) is module
    assert type(get_activation(nn.Hardtanh)) is nn.Hardtanh
    with pytest.raises(ValueError, match=r"'rleu'.*did you mean 'relu'.*sigmoid"):
        get_activation("rleu")
    with pytest.raises(TypeError, match="activation"):
        get_activation(3)


def test_layer_activation_none_or_linear_stores_no_child():
    for spec in (None, "linear", "identity", nn.Identity()):
        fc = Dense(3, activation=spec)
        assert fc.activation is None and list(fc.children()) == []
    fc = Dense(3, activation="relu")
    assert [name for name, _ in fc.named_children()] == ["activation"] and isinstance(fc.activation, nn.ReLU)


@pytest.mark.parametrize("cls, shape", [(BatchNorm2d, (4, 6, 6)), (BatchNorm1d, (4,)), (BatchNorm1d, (4, 7))])
def test_batch_norm_builds_from_the_channels(cls, shape):
    bn = cls(momentum=0.2, eps=1e-3)
    assert bn.num_features is None and not is_built(bn)
    with pytest.raises(NotBuiltError, match="num_features"):
        bn(torch.randn(3, *shape))
    bn.build(shape)
    assert is_built(bn) and bn.num_features == 4 and bn.momentum == 0.2 and bn.eps == 1e-3
    torch_class = nn.BatchNorm2d if cls is BatchNorm2d else nn.BatchNorm1d
    theirs = torch_class(4, eps=1e-3, momentum=0.2)
    assert isinstance(bn, torch_class) and list(bn.state_dict()) == list(theirs.state_dict())
    x = torch.randn(3, *shape)
    torch.testing.assert_close(bn(x), theirs(x))
    torch.testing.assert_close(bn.running_mean, theirs.running_mean)
    assert bn.output_shape(shape) == shape
    with pytest.raises(ShapeError, match="expects 4 channels, got 5"):
        bn.output_shape((5, *shape[1:]))


def test_batch_norm_built_at_once_and_dimension_check():
    assert BatchNorm2d(num_features=3).weight.shape == (3,)
    with pytest.raises(ShapeError, match="3 dimension"):
        BatchNorm2d().output_shape((3, 4))


def test_flatten_dropout_softmax():
    x = torch.randn(2, 3, 4, 5)
    assert Flatten()(x).shape == (2, 60) and Flatten().output_shape((3, 4, 5)) == (60,)
    assert Flatten(2).output_shape((3, 4, 5)) == (3, 20) == tuple(Flatten(2)(x).shape[1:])
    with pytest.raises(ValueError, match="batch"):
        Flatten(0)
    drop = Dropout(0.25)
    assert drop.rate == drop.p == 0.25 and isinstance(drop, nn.Dropout)
    assert torch.equal(drop.eval()(x), x) and drop.output_shape((3, 4, 5)) == (3, 4, 5)
    kept = Dropout(0.5).train()(torch.ones(10000))
    assert set(kept.unique().tolist()) <= {0.0, 2.0} and 0.45 < (kept > 0).float().mean() < 0.55
    probs = Softmax()(torch.randn(4, 10))
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert Softmax().output_shape((10,)) == (10,)


def test_dense_traces_with_torch_fx():
    fc = Dense(3, activation="relu", in_features=8)
    traced = torch.fx.symbolic_trace(fc)
    x = torch.randn(2, 2, 2, 2)
    torch.testing.assert_close(traced(x), fc(x))
