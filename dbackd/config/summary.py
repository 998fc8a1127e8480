"""What `dbackd check` prints for a usable config: where it listens, what it serves, and its servers.

Formatting of a loaded model only; the loader has already checked it.
"""
from __future__ import annotations

from dbackd.config.loader import EMBEDDED_NAME
from dbackd.config.model import Config, Server
from dbackd.config.sections import sections


def summary(config: Config) -> str:
    lines = [f"{config.file or EMBEDDED_NAME}: OK",
             f"listen   {config.listen.host}:{config.listen.port}" + (" (TLS)" if config.listen.tls else "")]
    for m in config.static:
        lines.append(f"static   {m.path} -> {m.dir or 'built-in page'} (socket also at {m.ws_path})")
    api = config.api
    lines.append(f"api      on at /api/, {len(api.tokens)} token{'s' if len(api.tokens) != 1 else ''}, "
                 f"{api.rate.per_second:g} requests/s (burst {api.rate.burst}) each" if api.enabled else "api      off")
    for key, settings in config.sections:
        lines += sections()[key].summary(settings)
    lines.append(f"servers  {len(config.servers)}")
    width_id = max((len(s.id) for s in config.servers), default=0)
    width_name = max((len(s.name) for s in config.servers), default=0)
    for s in config.servers:
        n = len(s.users)
        flags = []
        section = sections().get(s.source)
        if section is not None:
            lines.append(f"  {s.id:<{width_id}}  {s.name:<{width_name}}  {s.snowflake:>20}  {section.describe(s)}")
            continue
        if s.default:
            flags.append("default")
        if s.passworded:
            flags.append(_private(s))
        lines.append(f"  {s.id:<{width_id}}  {s.name:<{width_name}}  {s.snowflake:>20}  "
                     f"{n:>4} user{'s' if n != 1 else ' '}  {'  '.join(flags)}".rstrip())
    lines += [f"note: {note}" for note in config.notes]
    return "\n".join(lines)


def _private(s: Server) -> str:
    """Who may enter a passworded server, in a few words."""
    parts = ["private"]
    if s.password:
        parts.append("legacy password")
    rules = s.access
    if rules.any:
        who = []
        if rules.any_discord_user:
            who.append("any Discord user")
        if rules.users:
            who.append(f"{len(rules.users)} listed user{'s' if len(rules.users) != 1 else ''}")
        if rules.guild_members:
            who.append("guild members")
        if rules.roles:
            who.append(f"{len(rules.roles)} role{'s' if len(rules.roles) != 1 else ''}")
        parts.append("login: " + " or ".join(who) + (" (mock)" if s.oauth.provider == "mock" else ""))
    return ", ".join(parts)
