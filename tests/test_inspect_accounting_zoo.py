"""Accounting of ``convkit.summary`` on torchvision's zoo, against independent truth.

* parameters: each row against torchvision's ``named_parameters`` (the parameters a module owns directly),
  rows adding up to the total, including weights used through function calls (ViT's ``out_proj`` inside
  ``F.multi_head_attention_forward``, Swin's ``F.linear(x, self.qkv.weight)``);
* multiply-adds: fvcore's per-operator counts at batch 1 (conv + linear + matrix products) on the model in
  the mode it is in, plus the Q K^T and A V products of ``scaled_dot_product_attention``, which fvcore skips
  and convkit counts, and two-operand einsums (MaxViT), which fvcore estimates through numpy's optimiser
  (their shapes recorded in a real forward);
* saved activations: a real CPU training-mode forward at batch 2 under ``saved_tensors_hooks``.

One model per family by default; ``CONVKIT_FULL_ZOO=1`` runs every torchvision classification model.
"""

import logging
import math
import os
import warnings

import pytest
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis

from convkit.inspect import summary
from convkit.layers.shapes import ShapeError

pytestmark = pytest.mark.filterwarnings("ignore::convkit.layers.shapes.ShapeWarning")

FAMILIES = ["alexnet", "vgg11", "resnet18", "squeezenet1_0", "densenet121", "inception_v3", "googlenet",
            "shufflenet_v2_x0_5", "mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5", "efficientnet_b0",
            "efficientnet_v2_s", "regnet_y_400mf", "resnext50_32x4d", "wide_resnet50_2", "convnext_tiny",
            "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t"]
MODELS = (torchvision.models.list_models(module=torchvision.models) if os.environ.get("CONVKIT_FULL_ZOO")
          else FAMILIES)
# the smallest input each model takes: ViT's position embedding and MaxViT's partitions are made for 224
FIXED = {"vit": 224, "maxvit": 224, "inception": 299}


def build(name: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None)
    side = next((s for prefix, s in FIXED.items() if name.startswith(prefix)), 64)
    if name.startswith("vit_h"):
        side = 224
    return model, (3, side, side)


def ours(model, size, **kw):
    try:
        return summary(model, size, **kw), size
    except ShapeError:
        size = (3, 224, 224)
        return summary(model, size, **kw), size


def attention_and_einsum_macs(model, x) -> int:
    """Multiply-adds of the products fvcore skips or approximates, from the shapes of a real forward:
    Q K^T + A V of every scaled_dot_product_attention call, and every two-operand einsum (fvcore's einsum
    figure is numpy's optimised-path FLOP estimate halved; one multiply-add per combination of indices here).
    """
    total = 0
    sdpa, einsum = torch.nn.functional.scaled_dot_product_attention, torch.einsum

    def record_sdpa(q, k, v, *args, **kwargs):
        nonlocal total
        total += math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
        return sdpa(q, k, v, *args, **kwargs)

    def record_einsum(equation, *operands):
        nonlocal total
        inputs = equation.replace(" ", "").split("->")[0].split(",")
        assert len(inputs) == 2 and "." not in equation, equation
        sizes = {}
        for letters, t in zip(inputs, operands):
            sizes.update(zip(letters, t.shape))
        total += math.prod(sizes.values())
        return einsum(equation, *operands)

    torch.nn.functional.scaled_dot_product_attention, torch.einsum = record_sdpa, record_einsum
    try:
        model(x)  # with autograd on, as convkit traces: MultiheadAttention's fast path needs it off
    finally:
        torch.nn.functional.scaled_dot_product_attention, torch.einsum = sdpa, einsum
    return total


def fvcore_macs(model, x):
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_operator = analysis.by_operator()
    return analysis, sum(v for k, v in by_operator.items()
                         if k in ("conv", "linear", "addmm", "matmul", "mm", "bmm", "baddbmm"))


@pytest.mark.parametrize("name", MODELS)
def test_parameter_rows_match_named_parameters_and_add_up(name):
    model, size = build(name)
    result, _ = ours(model.train(), size)
    check_parameters(model, result)


def check_parameters(model, result) -> None:
    """Each row against the parameters its module owns directly (``named_parameters``), rows adding up."""
    owned: dict[str, int] = {}
    for full, p in model.named_parameters():
        owner = full.rpartition(".")[0] or type(model).__name__
        owned[owner] = owned.get(owner, 0) + p.numel()
    rows = {r.name: r.params for r in result.rows if not r.repeat}
    for owner, count in owned.items():
        assert rows.get(owner) == count, owner
    assert sum(r.params for r in result.rows) == sum(owned.values()) == result.totals["parameters"]
    assert result.totals["parameters_in_layers"] == result.totals["parameters"]


@pytest.mark.parametrize("name", MODELS)
def test_macs_match_fvcore_at_batch_1_in_the_models_mode(name):
    model, size = build(name)
    model.eval()
    result, size = ours(model, size)
    assert result.mode == "eval"
    check_macs(model, result, size)


def check_macs(model, result, size) -> None:
    """convkit's total = fvcore's conv + linear + matrix products at batch 1 + what fvcore skips."""
    x = torch.randn(1, *size)
    _, theirs = fvcore_macs(model, x)
    assert result.totals["macs"] == theirs + attention_and_einsum_macs(model, x)
    assert result.totals["macs_in_layers"] == result.totals["macs"]


def saved_bytes(model, x) -> int:
    """Bytes autograd really saves in one training-mode CPU forward (distinct storages; no parameters,
    buffers or input), as tests/test_inspect_memory.py measures them."""
    exclude = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers(), x]}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() and storage.data_ptr() not in exclude:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


@pytest.mark.parametrize("name", MODELS)
def test_saved_activations_match_a_real_cpu_forward(name):
    model, size = build(name)
    model.eval()  # the prediction comes from a training-mode pass whatever the model's mode
    result, size = ours(model, size, batch_size=2)
    check_saved(model, result, size, rel=TOLERANCE.get(name, 0))


def check_saved(model, result, size, rel: float = 0) -> None:
    """Predicted saved activations (``result`` made with ``batch_size=2``) against a real forward at batch 2."""
    real = saved_bytes(model, torch.randn(2, *size))
    assert result.memory["training"]["activations"] == pytest.approx(real, rel=rel)


# Measured ratios predicted / real at batch 2 (see the module docstring); CNNs are exact.
TOLERANCE: dict[str, float] = {}


@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_auxiliary_heads_count_in_training_mode_only(name):
    model, size = build(name)
    train, size = ours(model.train(), size)
    evaluated, _ = ours(model.eval(), size)
    aux = {n for n, _ in model.named_modules() if n.startswith("Aux")} | {
        n for n, _ in model.named_modules() if n.startswith("aux")}
    aux_macs = sum(r.macs for r in train.rows if r.name.split(".")[0] in aux)
    aux_params = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in aux)
    assert aux_macs > 0 and aux_params > 0
    assert (train.mode, evaluated.mode) == ("training", "eval")
    assert train.totals["macs"] - evaluated.totals["macs"] == aux_macs
    assert evaluated.totals["parameters"] - evaluated.totals["parameters_in_layers"] == aux_params
    assert "in eval mode" in str(evaluated)
    # training memory comes from a training-mode pass in both
    assert evaluated.memory["training"] == train.memory["training"]


def test_swin_v2_position_bias_mlp_counted_whole():
    model, size = build("swin_v2_t")
    model.eval()
    result, size = ours(model, size)
    analysis, _ = fvcore_macs(model, torch.randn(1, *size))
    by_module = analysis.by_module()
    for name in ("features.1.0.attn.cpb_mlp.0", "features.1.0.attn.cpb_mlp.2", "features.5.3.attn.cpb_mlp.0"):
        assert result[name].macs == by_module[name] > 0, name
    # once per forward whatever the batch: the same per-forward figure traced at batch 2 and counted per image
    assert result["features.1.0.attn.cpb_mlp.0"].macs == 15 * 15 * 2 * 512
