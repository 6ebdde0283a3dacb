"""The gRPC surface: one module per service, health, the error mapping, and request and window decoding."""
