"""convkit.inspect"""
