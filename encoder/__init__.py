"""The embedding tower shared by the trainer (which fits it) and the server (which serves it)."""
