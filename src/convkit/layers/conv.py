# PLACEHOLDER until implemented
Conv2d = None
ConvTranspose2d = None
