"""Operations: the process under a service manager (signals, sd_notify, workers), logs,
metrics and the descriptor limit.

Nothing here decides what the world holds or what a client is sent.
"""
