# PLACEHOLDER until implemented
ACTIVATIONS = None
BatchNorm1d = None
BatchNorm2d = None
Dense = None
Dropout = None
Flatten = None
LocalResponseNorm = None
Softmax = None
get_activation = None
