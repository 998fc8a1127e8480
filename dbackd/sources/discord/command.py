"""The slash command in the gateway worker: registered per guild through discord.py's app_commands,
each use handed to the daemon as a record and answered with the words the daemon sends back.

The worker knows no page, server or count: the daemon does (source.py builds the reply), so
a use becomes a `CommandAsked` record and the answer comes back on the worker's stdin. Discord
wants the first response within 3 s; past ANSWER_WAIT without one the member is told to try
again. Registration is a bulk overwrite per guild (one PUT, idempotent), made when a session
starts, when the bot joins a guild, and when the config changes the guilds or the words;
discord.py waits out Discord's 429s itself. It never logs the interaction's token.
"""
from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable, Optional

import structlog

from dbackd.sources.discord import records as r

log = structlog.get_logger("dbackd.discord")

ANSWER_WAIT = 2.0  # seconds the daemon gets to answer: Discord's deadline for the first response is 3 s
NOT_READY = "The world is not ready yet: try again in a moment."


class SlashCommands:
    """The command the config asks for (`spec`: name, description, guild ids), across the worker's connections."""

    def __init__(self, spec: Optional[dict], post: Callable[[r.Record], None]):
        self.spec = spec or {"name": "", "description": "", "guilds": []}
        self._post = post
        self._pending: dict[str, asyncio.Future] = {}
        self._registered: dict[int, tuple] = {}  # guild id -> (name, description) sent to Discord, () when none
        self._tree: Any = None
        self._client: Any = None

    def attach(self, client: Any) -> None:
        """A new client (a new session): its command tree; each guild is registered again once it is there."""
        from discord import app_commands

        self._client = client
        self._tree = app_commands.CommandTree(client)
        self._registered.clear()

    async def sync(self) -> None:
        """Register the command in each wanted guild the bot is in, and remove it where it is no longer wanted."""
        import discord
        from discord import app_commands

        client, tree = self._client, self._tree
        if client is None or tree is None or not client.is_ready():
            return
        wanted = {int(g) for g in self.spec["guilds"]}
        words = (self.spec["name"], self.spec["description"])
        for guild_id in sorted(wanted | set(self._registered)):
            if client.get_guild(guild_id) is None:
                continue
            target = words if guild_id in wanted else ()
            if self._registered.get(guild_id, None if guild_id in wanted else ()) == target:
                continue
            guild = discord.Object(guild_id)
            tree.clear_commands(guild=guild)
            if target:
                tree.add_command(app_commands.Command(name=words[0], description=words[1], callback=self._asked),
                                 guild=guild)
            try:
                await tree.sync(guild=guild)
            except discord.Forbidden:
                log.error("discord.command_refused", guild=str(guild_id),
                          error="Discord refused to register the slash command: invite the bot with the "
                                "applications.commands scope (Developer Portal, OAuth2 → URL Generator)")
                continue
            except (discord.HTTPException, OSError, asyncio.TimeoutError) as exc:
                log.warning("discord.command_not_registered", guild=str(guild_id), error=type(exc).__name__)
                continue
            self._registered[guild_id] = target
            log.info("discord.command_registered" if target else "discord.command_removed", guild=str(guild_id),
                     command=words[0] if target else None)

    async def change(self, spec: dict) -> None:
        self.spec = spec
        await self.sync()

    def answer(self, ask: str, text: str) -> None:
        future = self._pending.get(ask)
        if future is not None and not future.done():
            future.set_result(text)

    async def _asked(self, interaction: Any) -> None:
        """A member used the command: the daemon words the answer; only they see it (ephemeral)."""
        import discord

        ask = uuid.uuid4().hex
        future = self._pending[ask] = asyncio.get_running_loop().create_future()
        self._post(r.CommandAsked(ask, str(interaction.guild_id), str(interaction.user.id)))
        try:
            text = await asyncio.wait_for(future, ANSWER_WAIT)
        except asyncio.TimeoutError:
            text = NOT_READY
        finally:
            self._pending.pop(ask, None)
        try:
            await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, OSError, asyncio.TimeoutError) as exc:
            log.warning("discord.command_not_answered", guild=str(interaction.guild_id), error=type(exc).__name__)
