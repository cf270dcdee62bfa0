"""Reusing a trained network: stages and freezing, per-stage learning rates, input and head adaptation,
feature extraction (cached) and its 2-D map.

Sits between the data and the engine: imports models, inspect and data, never train or tasks (the engine
imports it; see the layering in the README).
"""

from convkit.reuse.adapt import Adaptation, AdaptError, adapt_head, adapt_input_channels
from convkit.reuse.features import cached_features, extract_features
from convkit.reuse.freeze import (
    FreezeError,
    FreezeRecord,
    Stage,
    apply_bn_policy,
    freeze,
    model_stages,
    param_groups,
)

__all__ = [
    "AdaptError",
    "Adaptation",
    "FreezeError",
    "FreezeRecord",
    "Stage",
    "adapt_head",
    "adapt_input_channels",
    "apply_bn_policy",
    "cached_features",
    "extract_features",
    "freeze",
    "model_stages",
    "param_groups",
]
