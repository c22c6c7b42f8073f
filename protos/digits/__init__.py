"""Generated gRPC code for the digits API (see protos/digits/v1/digits.proto)."""
