"""The edge: where a client meets the daemon. The HTTP routes, the socket endpoint and each
socket's session, the door and the per-address caps, logins (access, OAuth2), static files.

It reads the world and sends through the fan-out; it never changes the world except through
a session's join.
"""
