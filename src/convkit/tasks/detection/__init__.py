"""Detection: boxes and classes of several objects per image (issue 13).

Every piece speaks one internal form: a target is ``{"boxes": float32 (M, 4) xyxy pixels, "labels": int64
(M,) class indices 0..C-1}`` (optional ``"masks"``, ``"iscrowd"``), images are uint8 ``(C, H, W)``.
"""
