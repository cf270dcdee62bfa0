"""Detection: boxes and classes of the objects in an image (issue 13).

Its pieces live in the modules of this package (`convkit.tasks.detection.data` reads COCO, VOC and YOLO
annotations into one internal form); the task that trains detectors on the engine is built from them.
"""
