# PLACEHOLDER until implemented
Sequential = None
