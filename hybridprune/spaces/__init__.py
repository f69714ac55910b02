"""hybridprune.spaces"""
