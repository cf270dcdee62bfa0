"""The receptive-field kind of convkit.summary, and whether its rows add up, over torchvision's 80 classifiers and
the 15 timm models of issue 11 (timm optional); print JSON.

Usage::

    python benchmarks/zoo_fields.py > benchmarks/results/inspect_fields_95.json
"""

import collections
import json
import sys
import warnings

import torch
import torchvision

from convkit.inspect import summary

try:
    import timm
except ImportError:  # torchvision's models only
    timm = None

warnings.simplefilter("ignore")
out = {}
tv = torchvision.models.list_models(module=torchvision.models)
TIMM = ["efficientnet_b0", "convnext_tiny", "regnety_016", "mobilenetv3_large_100", "resnest14d", "dla34", "ghostnet_100",
        "densenet121", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "coatnet_0_rw_224",
        "levit_128", "edgenext_small", "rexnet_100"]
for src, names in (("torchvision", tv), ("timm", TIMM if timm else [])):
    for n in names:
        def build(n=n, src=src):
            return (torchvision.models.get_model(n, weights=None) if src == "torchvision" else timm.create_model(n, pretrained=False))

        try:
            with torch.device("meta"):
                m = build()
        except Exception:
            m = build()
        size = (3, 299, 299) if n == "inception_v3" else (3, 224, 224)
        try:
            s = summary(m, size)
            f = s.totals["receptive_field"]
            out[f"{src}:{n}"] = {"kind": f["kind"], "size": f["size"], "layer": s.totals["receptive_field_layer"],
                                 "rows_add_up": s.totals["parameters_in_layers"] == s.totals["parameters"],
                                 "macs_in_rows": s.totals["macs_in_layers"] == s.totals["macs"]}
        except Exception as e:
            out[f"{src}:{n}"] = {"error": repr(e)[:200]}
        print(n, out[f"{src}:{n}"], file=sys.stderr, flush=True)
c = collections.Counter((k.split(":")[0], v.get("kind", "error")) for k, v in out.items())
print(json.dumps({"counts": {f"{a} {b}": n for (a, b), n in sorted(c.items())},
                  "rows_not_adding_up": [k for k, v in out.items() if not v.get("rows_add_up", True)],
                  "macs_not_in_rows": [k for k, v in out.items() if not v.get("macs_in_rows", True)],
                  "models": out}, indent=1))
