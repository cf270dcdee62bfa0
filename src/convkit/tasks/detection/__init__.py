"""Object detection, the second task on the core (issue 13; being built).

The pieces so far, each a module of its own (not imported here, so importing the package stays cheap):

* `convkit.tasks.detection.data`: `DetectionDataset` and the COCO JSON, Pascal VOC and YOLO readers
  (`load_detection`), one internal form: xyxy pixel boxes, 0-based labels, crowd flags, optional masks;
  `boxes.clip_boxes`, the one rule for boxes that leave the image.
* `convkit.tasks.detection.scenes`: the built-in default, real Fashion-MNIST items composed on larger canvases
  with exact boxes and masks, written as PNGs and COCO JSON.
* `convkit.tasks.detection.metrics`: COCO's 12 numbers through pycocotools, VOC AP@0.5, precision-recall curves.
* `convkit.tasks.detection.yolo`: YOLO v1's output layout, the loss of Redmon et al. 2016 (eq. 3) and decoding.
* `convkit.tasks.detection.localize`: classification + localisation, one box per image, with IoU metrics.
* `convkit.tasks.detection.models`: torchvision's Faster R-CNN and RetinaNet on convkit backbones (FPN, small
  anchors, RoI max pooling as an option), no download.
* Augmentation that moves boxes and masks with the pixels (mosaic, scale-jitter, flips, crops, the affine warp)
  is `convkit.data.Augmenter.detection`.

`convkit summary BACKBONE --detector fasterrcnn|retinanet|localizer|yolo` inspects each detector per part
(`convkit.inspect.detection`).

Not yet: the detection `Task` on the training engine, `convkit train --task detect`, evaluate/predict, the
benchmark.
"""
