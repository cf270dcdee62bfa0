# PLACEHOLDER until implemented
BasicBlock = None
Bottleneck = None
ConvBNAct = None
InceptionModule = None
MLPConv = None
