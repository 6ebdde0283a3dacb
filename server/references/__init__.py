"""Reference cases and node state: the in-memory index classification reads, and what is kept in Redis."""
