"""convkit: a workbench for convolutional neural networks.

Declare a CNN (Python or a model file in the papers' notation) or take a classic from the zoo,
inspect it without running it, train it, look inside it and reuse it.

>>> import convkit
>>> model = convkit.create_model("resnet18", num_classes=10)
>>> model(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 10])
>>> net = convkit.Sequential([convkit.layers.Conv2d(32, 5), convkit.layers.Dense(10)], input_shape=(1, 28, 28))
>>> net.shapes
OrderedDict([('conv1', (32, 24, 24)), ('fc1', (10,))])
>>> print(convkit.summary(net))     # shapes, parameters, multiply-adds, memory, without running it
convkit summary: Sequential  input 1x28x28  float32  batch 1  optimizer sgd
---------------------------------------------------------------------------------------------
Layer  Type    Kernel/S/P  Output     Params     MACs      Act.     Saved  RF size/jump/start
---------------------------------------------------------------------------------------------
conv1  Conv2d  5x5/1/0     32x24x24      832  460,800  72.0 KiB         -  5/1/2
fc1    Dense               10        184,330  184,320      40 B  72.0 KiB  global
---------------------------------------------------------------------------------------------
Parameters:       185,162 (185,162 trainable, 0 frozen) = 723.3 KiB; buffers 0 = 0 B
...
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
from convkit.tasks.segmentation.convolutionize import convolutionize
from convkit.train import FinetuneConfig, TrainConfig, Trainer, finetune, load_checkpoint, train

__version__ = "0.1.0"
__all__ = [
    "FinetuneConfig", "Sequential", "TrainConfig", "Trainer", "convolutionize", "create_model", "evaluate", "finetune", "layers", "list_models", "load_checkpoint",
    "load_model_file", "model_info", "predict", "resolve_model", "summary", "train", "__version__",
]
