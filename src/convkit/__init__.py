"""convkit: a workbench for convolutional neural networks.

Declare a CNN (Python or a model file in the papers' notation) or take a classic from the zoo,
inspect it without running it, train it, look inside it and reuse it.

>>> import convkit
>>> model = convkit.create_model("vgg16", num_classes=10)
>>> net = convkit.Sequential([convkit.layers.Conv2d(32, 5), convkit.layers.Dense(10)], input_shape=(1, 28, 28))
"""

from convkit import layers
from convkit.inspect import summary
from convkit.models import (
    Sequential,
    create_model,
    list_models,
    load_model_file,
    model_info,
    resolve_model,
)
from convkit.tasks.classification import evaluate, predict
from convkit.train import TrainConfig, Trainer, load_checkpoint, train

__version__ = "0.1.0"
__all__ = [
    "Sequential", "TrainConfig", "Trainer", "create_model", "evaluate", "layers", "list_models", "load_checkpoint",
    "load_model_file", "model_info", "predict", "resolve_model", "summary", "train", "__version__",
]
