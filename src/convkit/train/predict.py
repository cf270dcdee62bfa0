"""Kept for older imports: classification's prediction lives in `convkit.tasks.classification.predict`."""

from convkit.tasks.classification.predict import *  # noqa: F403
from convkit.tasks.classification.predict import Prediction, expand_inputs, predict  # noqa: F401
