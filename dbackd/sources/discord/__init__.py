"""A live Discord guild as a source: the bot's gateway connection (gateway.py, run by a worker
process: worker.py, process.py) turns the guild into plain records; the source (source.py, on the
daemon's event loop) turns those into world events for every `source: discord` server. Its part of
the config, the `discord` section, is settings.py's. Nothing is imported here, so that reading a
config (which asks settings.py) does not load the source."""
