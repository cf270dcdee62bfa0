"""convkit.train: training, evaluation and prediction, from Python as from the `convkit` command.

>>> from convkit.train import train, Trainer, load_checkpoint, evaluate, predict
>>> result = train(epochs=3)                          # fastcnn on the shipped Fashion-MNIST subset
>>> ckpt = load_checkpoint(result.run_dir)            # best.safetensors, rebuilt without unpickling
>>> print(evaluate(ckpt, load_dataset("default", "test")))
>>> predict(ckpt, ["shoe.png"], top=3)
"""

from convkit.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, read_header
from convkit.train.config import TrainConfig
from convkit.train.evaluate import (
    EvalResult,
    classification_metrics,
    evaluate,
    predict_dataset,
    predict_logits,
)
from convkit.train.lr_finder import LRFinderResult, lr_sweep, suggest_lr
from convkit.train.predict import Prediction, predict
from convkit.train.trainer import NonFiniteLossError, Trainer, TrainResult, load_test_data, train

__all__ = [
    "Checkpoint", "CheckpointError", "EvalResult", "LRFinderResult", "NonFiniteLossError", "Prediction",
    "TrainConfig", "TrainResult", "Trainer", "classification_metrics", "evaluate", "load_checkpoint",
    "load_test_data", "lr_sweep", "predict", "predict_dataset", "predict_logits", "read_header", "suggest_lr", "train",
]
