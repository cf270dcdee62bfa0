"""Kept for older imports: classification's evaluation lives in `convkit.tasks.classification.metrics`."""

from convkit.tasks.classification.metrics import *  # noqa: F403
from convkit.tasks.classification.metrics import fit_images, worst_examples  # noqa: F401
