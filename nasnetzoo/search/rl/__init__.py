"""NASNet's own search: an RNN controller trained with PPO over the NASNet cell space."""
