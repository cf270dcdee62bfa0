"""convkit.export: trained models out of the workbench, and back in for inference.

* `export_model(run, "onnx" | "torchscript" | "exported-program", path)`: the file, with the model's metadata
  (task, classes, normalisation, input size); `convkit export` on the command line.
* `load_onnx(path)`: an exported .onnx file as a `convkit.models.Checkpoint` running in onnxruntime.
* `load_inference(source)`: a run folder, checkpoint or .onnx file ready to answer (what `convkit serve` uses).
"""

from convkit.export.formats import (
           EXPORTERS,
           FORMATS,
           ExportError,
           ExportResult,
           export_metadata,
           export_model,
)
from convkit.export.onnx import load_onnx
from convkit.export.runtime import Inference, load_inference

__all__ = ["EXPORTERS", "FORMATS", "ExportError", "ExportResult", "Inference", "export_metadata", "export_model",
           "load_inference", "load_onnx"]
