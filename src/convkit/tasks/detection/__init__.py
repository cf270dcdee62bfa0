"""Detection: boxes and classes of several objects per image (issue 13).

The pieces live in modules beside this one (the data readers, the built-in scenes generator, the detectors,
the metrics); every piece shares one internal form: an image is a uint8 tensor (C, H, W), its objects a dict
``{"boxes": float32 (M, 4) xyxy pixels (x2, y2 exclusive), "labels": int64 (M,), optional "masks", "iscrowd"}``.
"""
