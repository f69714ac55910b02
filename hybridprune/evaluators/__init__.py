"""hybridprune.evaluators"""
