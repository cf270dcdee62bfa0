"""convkit.explain"""
