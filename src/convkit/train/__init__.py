"""convkit.train: the training engine, from Python as from the `convkit` command.

The engine (`Trainer`, `train`) runs any task (`convkit.train.task.Task`); classification's evaluation and
prediction live in `convkit.tasks.classification` and are importable from here as before.

>>> from convkit.train import TrainConfig, Trainer, train
>>> TrainConfig().task
'classification'
"""

# evaluate.py and predict.py re-export classification's evaluation and prediction (`convkit.tasks.classification`)
# under their old names, for the imports that predate the tasks package; the engine's own modules (trainer.py,
# task.py) never import a task.
from convkit.models.reference import Checkpoint, load_checkpoint
from convkit.models.weights import CheckpointError, read_header
from convkit.train.config import FinetuneConfig, TrainConfig
from convkit.train.evaluate import (
    EvalResult,
    classification_metrics,
    evaluate,
    predict_dataset,
    predict_logits,
)
from convkit.train.finetuning import FinetuneTrainer, finetune  # noqa: E402  (after the engine it extends)
from convkit.train.lr_finder import LRFinderResult, lr_sweep, suggest_lr
from convkit.train.predict import Prediction, predict
from convkit.train.settings import torch_settings
from convkit.train.task import Task, get_task, list_tasks, register_task
from convkit.train.trainer import NonFiniteLossError, Trainer, TrainResult, load_test_data, train

__all__ = [
    "Checkpoint", "CheckpointError", "EvalResult", "FinetuneConfig", "FinetuneTrainer", "LRFinderResult", "NonFiniteLossError", "Prediction", "Task",
    "TrainConfig", "TrainResult", "Trainer", "classification_metrics", "evaluate", "finetune", "get_task", "list_tasks",
    "load_checkpoint", "load_test_data", "lr_sweep", "predict", "predict_dataset", "predict_logits", "read_header",
    "register_task", "suggest_lr", "torch_settings", "train",
]
