"""convkit.reuse: reuse a trained CNN (issue 12): feature extraction, fine-tuning, foreign weights."""

from convkit.reuse.features import cached_features, extract_features

__all__ = ["cached_features", "extract_features"]
