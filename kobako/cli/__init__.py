"""The docker-like `kobako` command line (front end over the engine)."""
