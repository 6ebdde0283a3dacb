"""Probe traffic: statistics catalogue, simulator, row format and windowing, shared by every component."""
