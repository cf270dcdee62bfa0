"""The zoo of classic CNNs, one file per family, each citing its paper.

``create_model(name, num_classes=..., in_channels=...)`` builds one; ``list_models(pattern)`` lists them.
"""

# Importing each family file registers its builders.
from convkit.models import alexnet, googlenet, lenet, nin, resnet, small, vgg, zfnet  # noqa: F401
from convkit.models._registry import (
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
from convkit.models.modelfile import ModelFileError, load_model_file, parse_model_file
from convkit.models.sequential import Sequential

__all__ = [
    "ClassifierNet", "ModelFileError", "ModelInfo", "Sequential", "UnknownModelError", "count_parameters",
    "create_meta_model", "create_model", "list_models", "load_model_file", "model_info", "parse_model_file",
    "register_model",
]
