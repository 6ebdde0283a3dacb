"""The model: an encoder version per device, the serving state and hot swap, the shadow, replica sync."""
