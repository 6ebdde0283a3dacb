"""faultprint.v1: the gRPC API's messages and service stubs, generated from the .proto files beside them."""
