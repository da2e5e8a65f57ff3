"""Training engine, data and recipes (retraining; also the base of the search pipelines)."""
