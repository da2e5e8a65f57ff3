"""Searches that train sampled children: the pipeline and its proposers."""
