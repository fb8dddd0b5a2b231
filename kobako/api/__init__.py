"""The Docker Engine API server (`kobako system service`)."""
