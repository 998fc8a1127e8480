"""A live Discord guild as a source: the bot's gateway connection (gateway.py, run by a worker
process: worker.py, process.py) turns the guild into plain records; the source (source.py, on the
daemon's event loop) turns those into world events for every `source: discord` server."""
from dbackd.sources.discord.source import DiscordSource

__all__ = ["DiscordSource"]
