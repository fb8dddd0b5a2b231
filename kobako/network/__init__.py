"""Networking: IPAM, bridge + veth, NAT and port publishing in nftables, user networks, DNS."""
