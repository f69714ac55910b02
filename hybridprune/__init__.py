"""hybridprune: find the best hybrid (channel + block) pruned CNN for a latency budget."""

__version__ = "0.1.0"
