"""Shared in Redis by the server, the trainer and operators' commands: id rule, key layout, model registry."""
