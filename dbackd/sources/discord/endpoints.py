"""Where discord.py talks to: the one place that points it at `discord.api_base`.

discord.py's REST base is the class attribute `discord.http.Route.BASE`, and a plain Client
connects to `DiscordWebSocket.DEFAULT_GATEWAY` without asking Discord where the gateway is.
Here the gateway's address is asked as Discord documents it (`GET {api_base}/gateway/bot`
with the bot token), and both are set from `api_base`. Both are process-wide, so one
process runs one gateway connection. It never logs the token.
"""
from __future__ import annotations

from typing import Any, Optional

import aiohttp
import yarl

from dbackd.core import jsontext
from dbackd.edge.bodies import read_limited

_MAX_BODY = 64 * 1024


class GatewayLookupFailed(Exception):
    """GET /gateway/bot did not give an address; `status` is Discord's HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


async def gateway_url(api_base: str, token: str, timeout: float) -> str:
    """The gateway's wss:// (or, for a local fake, ws://) address, asked of Discord."""
    return (await bot_gateway(api_base, token, timeout))[0]


def starts_left(data: Any) -> Optional[tuple[int, int, float]]:
    """`session_start_limit` of a /gateway/bot answer as (remaining, total, seconds to reset), if whole."""
    limit = data.get("session_start_limit") if isinstance(data, dict) else None
    if not isinstance(limit, dict):
        return None
    remaining, total, reset = limit.get("remaining"), limit.get("total"), limit.get("reset_after")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in (remaining, total, reset)):
        return None
    return remaining, total, reset / 1000


def concurrency(data: Any) -> int:
    """`session_start_limit.max_concurrency`: how many IDENTIFYs Discord takes per 5 s (1 if not said)."""
    limit = data.get("session_start_limit") if isinstance(data, dict) else None
    value = limit.get("max_concurrency") if isinstance(limit, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


async def bot_gateway(api_base: str, token: str,
                      timeout: float) -> tuple[str, Optional[tuple[int, int, float]], int]:
    """The gateway's address, what is left of the bot's identify budget, and its max_concurrency."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False) as http:
            async with http.get(f"{api_base}/gateway/bot", headers={"Authorization": f"Bot {token}"},
                                allow_redirects=False) as resp:
                body = await read_limited(resp.content, _MAX_BODY, resp.content_length)
                status = resp.status
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise GatewayLookupFailed(f"cannot reach {api_base}: {type(exc).__name__}") from None
    if status in (401, 403):
        raise GatewayLookupFailed("Discord refused the bot token", status)
    data = jsontext.parse_or_none(body)
    url = data.get("url") if isinstance(data, dict) else None
    if status != 200 or not isinstance(url, str) or not url.startswith(("wss://", "ws://")):
        raise GatewayLookupFailed(f"GET {api_base}/gateway/bot answered {status} without a gateway address", status)
    return url, starts_left(data), concurrency(data)


def point_at(api_base: str, gateway: str) -> None:
    """Make discord.py use this REST base and this gateway (its default, also after an invalid session)."""
    from discord.gateway import DiscordWebSocket
    from discord.http import Route

    Route.BASE = api_base
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
