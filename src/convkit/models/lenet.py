# PLACEHOLDER until implemented
