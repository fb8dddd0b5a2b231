"""What a dockerd outside a swarm answers: /swarm, /services, /nodes, /tasks, /secrets,
/configs; and /plugins, /distribution."""

from __future__ import annotations
