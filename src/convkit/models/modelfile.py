# PLACEHOLDER until implemented
ModelFileError = None
load_model_file = None
parse_model_file = None
