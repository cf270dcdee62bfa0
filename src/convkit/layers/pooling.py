# PLACEHOLDER until implemented
AvgPool2d = None
GlobalAvgPool2d = None
GlobalMaxPool2d = None
MaxPool2d = None
SumPool2d = None
