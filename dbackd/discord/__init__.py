"""A live Discord guild as a source: the bot's gateway connection (gateway.py, in a thread of its
own) turns the guild into plain records; the source (source.py, on the event loop) turns those
into world events for every `source: discord` server."""
from .source import DiscordSource

__all__ = ["DiscordSource"]
