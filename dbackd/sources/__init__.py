"""Sources of change: everything that moves the world. The reloader of the declaration, the
simulation, the HTTP API, the Python API with its callbacks and providers, the Discord
gateway.

A source is built with the world and the few collaborators it needs; it changes the world
through events and never imports the fan-out side (frames reach sockets from the world's
events alone).
"""
