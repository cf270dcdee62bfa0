"""Object detection, the second task on the core.

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

* `convkit.tasks.detection.detector`: `Detector`, every detector behind one calling convention (loss terms in
  training, detections in evaluation), and `build_detector`, whose spec rebuilds it from a checkpoint.
* `convkit.tasks.detection.task`: `DetectionTask`, the task the engine trains (`convkit train --task detect`).
* `convkit.tasks.detection.inference`: `evaluate_detector` and `predict_detections` (`convkit evaluate`,
  `convkit predict`).
"""
