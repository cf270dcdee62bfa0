"""``convkit.summary`` on timm's models, checked as the torchvision zoo is (skipped without timm).

The checks are the torchvision zoo's own (tests/test_inspect_accounting_zoo.py,
tests/test_inspect_rf_zoo.py), on ``timm.create_model(name, pretrained=False)`` (nothing downloaded):

* parameters: each row against ``named_parameters``, rows adding up to the total;
* multiply-adds: fvcore's conv + linear + matrix products at batch 1 in eval mode, plus the Q K^T and A V
  products of ``scaled_dot_product_attention`` (timm's ViT, DeiT and CoAtNet call it; fvcore skips it);
  exactly, no tolerance;
* saved activations: a real CPU training-mode forward at batch 2 under ``saved_tensors_hooks``, exactly;
* receptive field: the gradient probe at the layer convkit reports (numeric: the exact extent; global: the
  whole input seen from the corner); an unknown field must give its reason, and the probe must not see the
  whole input there (a field that is really global must not be called unknown).

The CNNs run at 64x64 (their fields then cover the input, so the numeric comparison is clipped on both
sides); timm's ViT, DeiT, Swin, CoAtNet and LeViT are built for 224. A representative subset runs by
default; ``CONVKIT_FULL_ZOO=1`` runs all 15.
"""

import os
import warnings

import pytest
import torch
from test_inspect_accounting_zoo import check_macs, check_parameters, check_saved
from test_inspect_rf_zoo import _probe, check_receptive_field

from convkit.inspect import summary

timm = pytest.importorskip("timm", reason="timm is an optional test dependency (pip install timm)")

pytestmark = pytest.mark.filterwarnings("ignore::convkit.layers.shapes.ShapeWarning")

ALL = ["efficientnet_b0", "convnext_tiny", "regnety_016", "mobilenetv3_large_100", "resnest14d", "dla34",
       "ghostnet_100", "densenet121", "vit_tiny_patch16_224", "deit_tiny_patch16_224",
       "swin_tiny_patch4_window7_224", "coatnet_0_rw_224", "levit_128", "edgenext_small", "rexnet_100"]
# one of each kind by default: squeeze-and-excitation, channels-last blocks, split attention, ghost modules, ViT's
# fused attention, CoAtNet's attention with a learned bias, LeViT, EdgeNeXt (Swin and the rest: 10 s more each)
DEFAULT = ["efficientnet_b0", "convnext_tiny", "resnest14d", "ghostnet_100", "vit_tiny_patch16_224",
           "coatnet_0_rw_224", "levit_128", "edgenext_small"]
MODELS = ALL if os.environ.get("CONVKIT_FULL_ZOO") else DEFAULT
# position embeddings, windows and attention biases made for 224
FIXED = ("vit_", "deit_", "swin_", "coatnet_", "levit_")

# measured: convkit calls the field unknown where the probe sees the whole input (attention over tokens is global,
# but convkit does not follow a map into tokens): unknown with its reason, never a number, yet not "global"
_TOKENS = "the probe: every position of the last map sees the whole input (attention over all tokens)"
UNKNOWN_BUT_GLOBAL = {
    "edgenext_small": "convkit: unknown (view in stages.1.blocks.2 rearranges the 8x8 map into tokens for "
                      "cross-covariance attention); probe: every position of norm_pre sees the whole 64x64 input",
    "swin_tiny_patch4_window7_224": f"convkit: unknown at norm (the window partition's view); {_TOKENS}",
}


def build(name: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False)
    side = 224 if name.startswith(FIXED) else 64
    return model, (3, side, side)


@pytest.mark.parametrize("name", MODELS)
def test_timm_parameter_rows_match_named_parameters_and_add_up(name):
    model, size = build(name)
    check_parameters(model, summary(model.train(), size))


@pytest.mark.parametrize("name", MODELS)
def test_timm_macs_match_fvcore_at_batch_1_in_the_models_mode(name):
    model, size = build(name)
    result = summary(model.eval(), size)
    assert result.mode == "eval"
    check_macs(model, result, size)


@pytest.mark.parametrize("name", MODELS)
def test_timm_saved_activations_match_a_real_cpu_forward(name):
    model, size = build(name)
    check_saved(model, summary(model.eval(), size, batch_size=2), size)


def _output_dims(model: torch.nn.Module, layer: str, size) -> int:
    dims = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: dims.append(o.dim()))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *size))
    finally:
        handle.remove()
    return dims[-1]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=UNKNOWN_BUT_GLOBAL[n]))
                                  if n in UNKNOWN_BUT_GLOBAL else n for n in MODELS])
def test_timm_receptive_field_matches_a_gradient_probe(name):
    model, size = build(name)
    result = summary(model, size)
    field = check_receptive_field(model, result, size[-1])
    if field["kind"] == "unknown" and _output_dims(model, result.totals["receptive_field_layer"], size) == 4:
        # a map: the probe can say whether it is global (tokens, N x L x C, cannot be probed)
        _, (corner,) = _probe(model, size[-1], result.totals["receptive_field_layer"], corner_only=True)
        assert corner != ((0, size[-1] - 1),) * 2, f"unknown, but the probe sees the whole input: {field}"


def test_timm_position_encoding_made_per_sample_counts_per_sample():
    # EdgeNeXt's Fourier position encoding projects torch.zeros(B, H, W) by a 1x1 convolution: not from the
    # input, but of the batch's size, so it is work per image (fvcore at batch 1: 64 x 192 x 8 x 8)
    model, size = build("edgenext_small")
    result = summary(model.eval(), size)
    assert result["stages.1.blocks.2.pos_embd.token_projection"].macs == 64 * 96 * 8 * 8


def test_timm_swin_field_is_unknown_at_its_last_map_not_a_number():
    # before: "4 pixels at layers.0.blocks.0.norm1", the last map convkit followed, shown as the model's field
    model, size = build("swin_tiny_patch4_window7_224")
    field = summary(model, size).totals
    assert field["receptive_field_layer"] == "norm"
    assert field["receptive_field"]["kind"] == "unknown" and "layers.0.blocks.0" in field["receptive_field"]["reason"]
