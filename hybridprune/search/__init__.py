"""hybridprune.search"""
