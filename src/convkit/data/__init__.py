"""convkit.data"""
