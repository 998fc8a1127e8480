"""Configuration: schema, loader and the immutable model (see loader.py for the pipeline)."""
from .errors import ConfigError, Problem
from .loader import EMBEDDED_NAME, embedded_text, load_data, load_embedded, load_file, load_text, with_overrides
from .model import (AccessRules, Api, ApiRate, Config, Limits, Listen, Logging, MetricsEndpoint, MockUser, Mount,
                    OAuth, Server, Tls, User)
from .schema import schema, schema_text
from .values import STATUSES, seconds

__all__ = [
    "ConfigError", "Problem", "EMBEDDED_NAME", "embedded_text", "load_data", "load_embedded", "load_file",
    "load_text", "with_overrides", "STATUSES", "AccessRules", "Api", "Config", "Limits", "Listen", "Logging",
    "MetricsEndpoint", "MockUser", "Mount", "OAuth", "ApiRate", "Server", "Tls", "User", "seconds", "schema", "schema_text",
]
