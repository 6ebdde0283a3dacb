"""The faultprint gRPC server: batches probe windows through the encoder and names each node's condition."""
