"""hybridprune.pruning"""
