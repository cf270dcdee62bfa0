"""Semantic and instance segmentation: per-pixel classes (FCN, U-Net, stacked hourglass, a convolutionized
classifier) and per-object masks (Mask R-CNN), as the third task on the training engine."""
