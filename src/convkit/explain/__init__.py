"""convkit.explain: look inside a CNN, and show what convolution does.

What a model learned: its filters, the feature maps an image produces, which pixels a prediction rests on
(saliency, Grad-CAM, occlusion, guided backpropagation, deconvnet; computed by Captum), and the input that
most excites a filter or class. What a kernel does: the lectures' kernels applied to an image, and the
convolution animated cell by cell. (A run's whole story on one HTML page is `convkit.report`.)

>>> from convkit.explain import load_explainable, load_image, save_attribution, save_animation, ConvGeometry
>>> tiny_run                            # a run folder: convkit.train(epochs=1, limit=128).run_dir
PosixPath('.../fastcnn-tiny')
>>> ex = load_explainable(tiny_run)     # or a zoo name ("fastcnn", untrained), a checkpoint, a model file
>>> ex.input_shape, ex.classes[7]
((1, 28, 28), 'Sneaker')
>>> from PIL import Image
>>> Image.fromarray(convkit.data.load_default("test").images[5, 0].numpy()).save("shoe.png")   # a sneaker
>>> save_attribution(ex, load_image("shoe.png", ex.input_shape), "gradcam", "shoe-gradcam.png")
PosixPath('shoe-gradcam.png')
>>> save_animation(ConvGeometry(5, 3, stride=2, padding=1), "conv.gif")
PosixPath('conv.gif')

Captum and matplotlib are imported only when a function needs them.
"""

from convkit.explain.animate import ConvGeometry, frames, geometry_from_layer, save_animation
from convkit.explain.attribution import (
    METHODS,
    AttributionResult,
    attribute,
    explain_image,
    overlay,
    save_attribution,
)
from convkit.explain.features import feature_maps, save_feature_maps
from convkit.explain.filters import filter_grid, save_filters
from convkit.explain.kernels import KERNELS, apply_kernel, load_kernel, save_kernel_comparison
from convkit.explain.maximize import maximize, save_maximized
from convkit.explain.source import (
    Explainable,
    LayerError,
    conv_layers,
    find_layer,
    load_explainable,
    load_image,
)

__all__ = [
    "KERNELS", "METHODS", "AttributionResult", "ConvGeometry", "Explainable", "LayerError",
    "apply_kernel", "attribute", "conv_layers", "explain_image", "feature_maps", "filter_grid",
    "find_layer", "frames", "geometry_from_layer", "load_explainable", "load_image", "load_kernel", "maximize",
    "overlay", "save_animation", "save_attribution", "save_feature_maps", "save_filters", "save_kernel_comparison",
    "save_maximized",
]
