"""Configuration: schema, loader and the immutable model (see loader.py for the pipeline)."""
from dbackd.config.errors import ConfigError, Problem
from dbackd.config.loader import EMBEDDED_NAME, embedded_text, load_data, load_embedded, load_file, load_text, with_overrides
from dbackd.config.model import (AccessRules, Api, ApiRate, Config, Limits, Listen, Logging, MetricsEndpoint, MockUser, Mount,
                    OAuth, Server, Tls, User)
from dbackd.config.schema import schema, schema_text
from dbackd.config.values import STATUSES, seconds

__all__ = [
    "ConfigError", "Problem", "EMBEDDED_NAME", "embedded_text", "load_data", "load_embedded", "load_file",
    "load_text", "with_overrides", "STATUSES", "AccessRules", "Api", "Config", "Limits", "Listen", "Logging",
    "MetricsEndpoint", "MockUser", "Mount", "OAuth", "ApiRate", "Server", "Tls", "User", "seconds", "schema", "schema_text",
]
