"""convkit.cli"""
