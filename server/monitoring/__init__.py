"""Node monitoring: minute streams, each node's window and condition, and its incidents."""
