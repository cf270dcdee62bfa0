"""convkit.export"""
