"""Tasks: what the training engine trains models for. Each registers itself by name with
`convkit.train.task.register_task`; `TrainConfig.task` (``convkit train --task``) picks one.

Classification is the first; detection and segmentation plug in the same way (see the README's Layout).

>>> from convkit.tasks import list_tasks
>>> "classification" in list_tasks()
True
"""

from convkit.tasks.classification import ClassificationTask
from convkit.tasks.detection.task import DetectionTask
from convkit.tasks.segmentation.instance import InstanceSegmentationTask
from convkit.tasks.segmentation.task import SegmentationTask
from convkit.train.task import Task, get_task, list_tasks, register_task

__all__ = ["ClassificationTask", "DetectionTask", "InstanceSegmentationTask", "SegmentationTask", "Task", "get_task",
           "list_tasks", "register_task"]
