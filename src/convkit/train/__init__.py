"""convkit.train"""
