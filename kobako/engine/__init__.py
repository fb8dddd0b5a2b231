"""The engine: container records, run options -> OCI bundle, lifecycle over the runtime."""
