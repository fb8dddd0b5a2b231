"""Storage: layer extraction and snapshots, overlay mounts, volumes."""
