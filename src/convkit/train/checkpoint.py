"""Checkpoints of a run: the file format lives in `convkit.models.weights`, the rebuilding of models in
`convkit.models.reference` (the one model resolver); this module keeps their names where training code and
older scripts import them.

Files of a run folder:
    best.safetensors / last.safetensors: the (EMA, if on) weights + metadata (task, model spec, class names,
        normalisation, input shape, epoch, metrics); what `load_checkpoint`, evaluate and predict read.
    resume.safetensors: weights, optimizer, scheduler, scaler, EMA, RNG states and the data position.
"""

from convkit.models.reference import Checkpoint, build_from_spec, load_checkpoint
from convkit.models.weights import (
    FORMAT,
    CheckpointError,
    find_checkpoint,
    flatten_state,
    load_state,
    load_tensors,
    read_header,
    save_state,
    save_tensors,
    unflatten_state,
)

__all__ = ["FORMAT", "Checkpoint", "CheckpointError", "build_from_spec", "find_checkpoint", "flatten_state",
           "load_checkpoint", "load_state", "load_tensors", "read_header", "save_state", "save_tensors",
           "unflatten_state"]
