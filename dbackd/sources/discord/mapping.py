"""The rules that turn a guild into what d-zone shows: who is shown, and what a message becomes.

Pure functions of records and a server's options; no state, no clock, no I/O.
"""
from __future__ import annotations

from typing import Optional

from dbackd.sources.discord.settings import DiscordOptions
from dbackd.sources.discord.records import MemberRec, MessageRec

DEFAULT_COLOR = "#99aab5"  # Discord's colour for a member without a coloured role
REDACTED = "…"  # what a redacted message shows: that someone spoke, never the words
STATUSES = {"online": "online", "idle": "idle", "dnd": "dnd", "do_not_disturb": "dnd"}


def status_of(value: object) -> str:
    """online, idle or dnd from a presence; anything else (offline, invisible, unknown) is offline."""
    return STATUSES.get(str(value), "offline")


def color_of(value: int) -> str:
    return f"#{value:06x}" if value else DEFAULT_COLOR


def _named(wanted: tuple[str, ...], ids: tuple[str, ...], names: tuple[str, ...]) -> bool:
    return any(w in ids or w in names for w in wanted)


def eligible(member: MemberRec, options: DiscordOptions) -> bool:
    """Whether the options let this member be shown (max_actors aside)."""
    if member.bot and not options.include_bots:
        return False
    if member.uid in options.ignore_users:
        return False
    if options.include_roles and not _named(options.include_roles, member.roles, member.role_names):
        return False
    if options.exclude_roles and _named(options.exclude_roles, member.roles, member.role_names):
        return False
    return not (options.hide_offline and member.status == "offline")


def channel_allowed(message: MessageRec, options: DiscordOptions) -> bool:
    """A message's channel (or a thread's parent channel) by id or name against listen/ignore."""
    here = tuple(x for x in (message.channel, message.channel_name, message.parent, message.parent_name) if x)
    if options.ignore_channels and (not message.channel_name or (message.parent and not message.parent_name)):
        return False  # a channel or parent discord.py has not cached may be an ignored one: fail closed
    if any(c in here for c in options.ignore_channels):
        return False
    return not options.listen_channels or any(c in here for c in options.listen_channels)


def doing(member: MemberRec, options: DiscordOptions) -> str:
    """A member's activity line: what they do, then their custom status filtered as messages are."""
    custom = ""
    if member.custom and options.custom_statuses == "content":
        custom = f"“{member.custom}”"
    elif member.custom and options.custom_statuses == "redact":
        custom = REDACTED
    return " · ".join(part for part in (member.activity, custom) if part)


def message_text(message: MessageRec, options: DiscordOptions) -> Optional[str]:
    """What the bubble says, or None for no bubble. Redact never carries the words."""
    if options.messages == "off":
        return None
    if options.messages == "redact":
        return REDACTED
    text = message.text.strip()
    if not text:
        return None  # an attachment or embed only
    limit = options.message_max_length
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
