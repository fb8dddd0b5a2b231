"""Docker-shaped views of the engine's objects: what `inspect` and the list endpoints
return, with dockerd's field names and zero values. Both front ends render from here."""

from __future__ import annotations
