"""Batching: the scheduler (pure policy, no TensorFlow), its cost model, batch assembly, the session."""
