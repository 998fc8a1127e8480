"""The core: the world (the single source of truth), its events, the declaration that moves it
to the config, and the small idioms every part shares (owned tasks, rates, slices, digests).

It imports nothing above it (only `dbackd.config` and `dbackd.version`): no sockets, no wire
bytes, no source.
"""
