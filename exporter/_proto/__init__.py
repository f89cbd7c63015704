"""Generated protobuf modules. Regenerate with scripts/gen-protos; never edit by hand."""
