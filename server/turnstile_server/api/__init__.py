"""The gRPC layer: servicers, conversions, the codec, the error table, interceptors."""
