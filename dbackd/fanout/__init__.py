"""The fan-out: the d-zone protocol's frames, the hub that decides what each socket is sent,
the one wire seam that writes to sockets, and the heartbeat.

Only this part writes to a socket. It learns of changes from the world's events and nothing
else.
"""
