"""The gRPC servicers: request validation, calls into the scheduler and store, responses."""
