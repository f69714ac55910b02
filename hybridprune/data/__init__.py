"""hybridprune.data"""
