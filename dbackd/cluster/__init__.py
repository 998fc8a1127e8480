"""Several nodes, one world: the shared log and state in Redis (backplane.py), the lease that
picks the one node running the producers (leadership.py), and what nodes must agree on."""
