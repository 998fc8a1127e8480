"""Stand-ins for outside services that tests start on loopback; nothing here reaches the internet."""
