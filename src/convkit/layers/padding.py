# PLACEHOLDER until implemented
PADDING_MODES = None
Pad2d = None
pad2d = None
