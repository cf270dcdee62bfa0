"""The zoo of classic CNNs, one file per family, each citing its paper.

``create_model(name, num_classes=..., in_channels=...)`` builds one; ``list_models(pattern)`` lists them;
``resolve_model(ref)`` turns any model reference (zoo name, model file, run folder, checkpoint, module) into a
model that carries its configuration as ``model.model_cfg``.
"""

# Importing each family file registers its builders.
from convkit.models import alexnet, googlenet, lenet, nin, resnet, small, vgg, zfnet  # noqa: F401
from convkit.models._registry import (
    ModelArgumentError,
    ModelInfo,
    UnknownModelError,
    count_parameters,
    create_meta_model,
    create_model,
    list_models,
    model_info,
    register_model,
)
from convkit.models.base import ClassifierNet
from convkit.models.foreign import (
    WeightMatch,
    WeightsDownloadError,
    load_foreign,
    match_state_dict,
    read_state_dict,
    torchvision_weights,
)
from convkit.models.modelfile import ModelFileError, load_model_file, parse_model_file
from convkit.models.reference import (
    Checkpoint,
    ModelCfg,
    build_from_spec,
    load_checkpoint,
    model_cfg,
    model_spec,
    resolve_model,
)
from convkit.models.sequential import Sequential
from convkit.models.weights import CheckpointError

__all__ = [
    "Checkpoint", "CheckpointError", "ClassifierNet", "ModelArgumentError", "ModelCfg", "ModelFileError", "ModelInfo", "Sequential",
    "UnknownModelError", "WeightMatch", "WeightsDownloadError", "build_from_spec", "count_parameters",
    "create_meta_model", "create_model", "list_models", "load_checkpoint", "load_foreign", "load_model_file",
    "match_state_dict", "model_cfg", "model_info", "model_spec", "parse_model_file", "read_state_dict",
    "register_model", "resolve_model", "torchvision_weights",
]
