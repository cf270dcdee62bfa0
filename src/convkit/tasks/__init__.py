"""convkit.tasks"""
