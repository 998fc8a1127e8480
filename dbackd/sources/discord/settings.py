"""The `discord` section of the config: the bot, every discord server's defaults, and each one's options.

Owned by the Discord source and read by it alone; the config's core model names no
source. The schema fragment is the `discord` key of the one schema file (so its errors
keep their FILE:LINE:COL); this module turns the validated block into `Discord`, gives a
`source: discord` server its `DiscordOptions` (its own keys over the block's), adds the
rules the schema cannot say, and the lines `dbackd check` prints. It never shows the token.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from dbackd.config import Config, Problem, Server
from dbackd.config.checks import check_secret, is_loopback
from dbackd.config.source import Source
from dbackd.config.values import seconds

KEY = "discord"  # the top-level key, the `source:` of its servers, the source's name

# The per-server keys of a `source: discord` server (a server's own replace the `discord` block's).
DISCORD_OPTIONS = ("messages", "message_max_length", "listen_channels", "ignore_channels", "ignore_users",
                   "include_roles", "exclude_roles", "include_bots", "hide_offline", "max_actors", "slash_command",
                   "activities", "custom_statuses")

# Privileged intents, as the Developer Portal names them (Bot → Privileged Gateway Intents).
MEMBERS_INTENT, PRESENCE_INTENT, CONTENT_INTENT = "Server Members Intent", "Presence Intent", "Message Content Intent"


@dataclass(frozen=True)
class DiscordOptions:
    """A `source: discord` server's effective options: the `discord` block's, its own keys over them."""

    messages: str = "redact"  # content | redact | off
    message_max_length: int = 200
    listen_channels: tuple[str, ...] = ()  # ids or names
    ignore_channels: tuple[str, ...] = ()
    ignore_users: tuple[str, ...] = ()
    include_roles: tuple[str, ...] = ()  # ids or names
    exclude_roles: tuple[str, ...] = ()
    include_bots: bool = False
    hide_offline: bool = False
    max_actors: Optional[int] = 2000  # what a browser can draw (the schema's description says why)
    slash_command: bool = False  # the bot answers `command` in this guild
    activities: bool = False  # what members are doing, on the built-in page
    custom_statuses: str = "off"  # content | redact | off: members' own words beside their activity


@dataclass(frozen=True)
class SlashCommand:
    """The slash command's words (`discord.command`)."""

    name: str = "dzone"
    description: str = "Find this server's world"
    reply: str = "**{name}** lives at {url}: {shown} members shown, {online} online.{login}"
    private: str = " It is private: open the link and log in with Discord (the page asks)."

    def answer(self, name: str, url: str, shown: int, online: int, private: bool) -> str:
        text = self.reply.format(name=name, url=url, shown=shown, online=online, login=self.private if private else "")
        return text[:2000]  # Discord's limit on a message's content


@dataclass(frozen=True)
class FaceSettings:
    """Members' faces (`discord.faces`, `cdn_base`, `face_cache`), as faces.py uses them."""

    enabled: bool = True
    cdn_base: str = "https://cdn.discordapp.com"
    cache_dir: Path = Path("/var/cache/dbackd/faces")
    cache_bytes: int = 64 * 1024 * 1024
    ttl: float = 86400.0
    fetches_per_second: float = 4.0


@dataclass(frozen=True)
class Discord:
    """The `discord` block: the bot that connects to the gateway, and every discord server's defaults."""

    bot_token: str = field(repr=False)
    api_base: str = "https://discord.com/api/v10"  # without a trailing slash
    auto_servers: bool = False
    timeout: float = 10.0
    defaults: DiscordOptions = DiscordOptions()
    public_url: Optional[str] = None  # where people open the page, without a trailing slash
    command: SlashCommand = SlashCommand()
    faces: FaceSettings = FaceSettings()


def _faces(block: Mapping[str, Any]) -> FaceSettings:
    cache = block.get("face_cache") or {}
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return FaceSettings(enabled=block.get("faces", True) is True,
                        cdn_base=str(block.get("cdn_base", FaceSettings.cdn_base)).rstrip("/"),
                        cache_dir=Path(cache["dir"]) if cache.get("dir") else Path(home) / "dbackd" / "faces",
                        cache_bytes=int(cache.get("max_mb", 64)) * 1024 * 1024,
                        ttl=seconds(cache.get("ttl", "24h")),
                        fetches_per_second=float(cache.get("fetches_per_second", 4)))


def settings_of(config: Config) -> Optional[Discord]:
    """The config's `discord` block, or None without one."""
    return config.section(KEY)


def options_of(server: Server) -> Optional[DiscordOptions]:
    """A discord server's options; None for a server of another source."""
    return server.options if server.source == KEY else None


def _options(block: Mapping[str, Any], over: Optional[DiscordOptions] = None) -> DiscordOptions:
    """Discord options from a block's keys; keys it does not give come from `over` (the defaults)."""
    base = over or DiscordOptions()
    given: dict[str, Any] = {}
    for key in DISCORD_OPTIONS:
        if key in block:
            value = block[key]
            if key in ("messages", "custom_statuses") and value is False:
                value = "off"  # YAML's reading of a bare `off`
            given[key] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **given)


class _Section:
    key = KEY
    server_keys = DISCORD_OPTIONS

    def settings(self, block: Mapping[str, Any]) -> Discord:
        words = block.get("command") or {}
        return Discord(bot_token=block["bot_token"], api_base=block["api_base"].rstrip("/"),
                       auto_servers=block["auto_servers"], timeout=seconds(block["timeout"]), defaults=_options(block),
                       public_url=block["public_url"].rstrip("/") if block.get("public_url") else None,
                       command=SlashCommand(**{k: words[k] for k in ("name", "description", "reply", "private")
                                               if k in words}),
                       faces=_faces(block))

    def options(self, server: Mapping[str, Any], settings: Optional[Discord]) -> DiscordOptions:
        return _options(server, settings.defaults if settings else None)

    def check(self, source: Source, data: dict, servers: list[dict], problems: list[Problem],
              notes: list[str]) -> None:
        """The `discord` block and the servers that take their members from it."""
        block = data.get(KEY) if isinstance(data.get(KEY), dict) else None
        if block is not None:
            check_secret(source, (KEY, "bot_token"), block.get("bot_token"), "DISCORD_BOT_TOKEN", problems)
            api_base = block.get("api_base")
            if isinstance(api_base, str) and api_base.startswith("http://") and not is_loopback(api_base):
                notes.append("discord: `api_base` is not https, so the bot token would cross the network in clear")
        auto = bool(block and block.get("auto_servers") is True)
        if block is not None:
            self._check_command(source, block, servers, problems)
        content: list[str] = []
        for i, s in enumerate(servers):
            if s.get("source") != KEY:
                continue
            if block is None:
                problems.append(source.problem(("servers", i, "source"), "a discord server needs the top-level "
                                               "`discord` block with `bot_token: ${DISCORD_BOT_TOKEN}`"))
            for key in ("users", "simulation"):
                if s.get(key):
                    problems.append(source.problem(("servers", i, key), f"a discord server's members come from the "
                                                   f"guild: `{key}` cannot be given"))
            if s.get("messages", (block or {}).get("messages")) == "content":
                content.append(str(s.get("id")))
        if block is not None and ([s for s in servers if s.get("source") == KEY] or auto):
            if auto and block.get("messages") == "content":
                content.append("the auto servers")
            needed = [MEMBERS_INTENT, PRESENCE_INTENT] + ([CONTENT_INTENT] if content else [])
            why = f" ({CONTENT_INTENT} for messages: content in {', '.join(content)})" if content else ""
            notes.append(f"discord: enable {', '.join(needed)} for the bot in the Developer Portal "
                         f"(Bot → Privileged Gateway Intents){why}")

    @staticmethod
    def _check_command(source: Source, block: dict, servers: list[dict], problems: list[Problem]) -> None:
        """The slash command's reply fills in, and every server that answers it has a page to link to."""
        words = block.get("command") if isinstance(block.get("command"), dict) else {}
        reply = words.get("reply")
        if isinstance(reply, str):
            try:
                reply.format(name="", url="", shown=0, online=0, login="")
            except (KeyError, IndexError, ValueError) as exc:
                problems.append(source.problem((KEY, "command", "reply"), "only {name}, {url}, {shown}, {online} and "
                                               f"{{login}} are filled in (write {{{{ and }}}} for braces): {exc}"))
        if block.get("public_url"):
            return
        if block.get("slash_command") is True:
            problems.append(source.problem((KEY, "slash_command"), "the slash command links to the page: give "
                                           "`discord.public_url`"))
        for i, s in enumerate(servers):
            if s.get("source") == KEY and s.get("slash_command") is True:
                problems.append(source.problem(("servers", i, "slash_command"), "the slash command links to the "
                                               "page: give `discord.public_url`"))

    def summary(self, settings: Discord) -> list[str]:
        return [f"discord  bot at {settings.api_base}"
                + (", every guild it is in (auto_servers)" if settings.auto_servers else "")]

    def describe(self, server: Server) -> str:
        """A discord server: where its members come from, and the options that shape them."""
        o = options_of(server)
        assert o is not None
        parts = [f"members from the guild, live; messages: {o.messages}"]
        if o.max_actors:
            parts.append(f"at most {o.max_actors} shown")
        if o.hide_offline:
            parts.append("offline hidden")
        if o.slash_command:
            parts.append("answers the slash command")
        if o.activities:
            parts.append("activities shown" + ("" if o.custom_statuses == "off" else f", custom statuses: {o.custom_statuses}"))
        if not server.named:
            parts.append("named by the guild")
        if server.default:
            parts.append("default")
        return "; ".join(parts)


SECTION = _Section()
