"""Classification: one class per image. The task the training engine runs by default.

>>> from convkit.tasks.classification import ClassificationTask, classification_metrics
>>> ClassificationTask.name
'classification'
"""

from convkit.tasks.classification.metrics import (
    EvalResult,
    classification_metrics,
    confusion_matrix,
    evaluate,
    fit_images,
    predict_dataset,
    predict_logits,
    trained_model,
    worst_examples,
)
from convkit.tasks.classification.predict import Prediction, expand_inputs, predict
from convkit.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask", "EvalResult", "Prediction", "classification_metrics", "confusion_matrix",
           "evaluate", "expand_inputs", "fit_images", "predict", "predict_dataset", "predict_logits",
           "trained_model", "worst_examples"]
