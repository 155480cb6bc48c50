"""What each process the runner starts may inherit from the runner's environment: the
variables it reads (its settings class's, or those its config files name), the standard
OTEL_* ones, and what any process needs to run at all. Nothing else: a provider key, a
cloud credential or a token in the shell of whoever runs `omni-trace up` reaches no process
that does not read it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import AliasChoices, AliasPath
from pydantic_settings import BaseSettings

from omni_trace.stack.paths import CONFIG_DIR

# Needed by any process to run at all (never a secret of ours).
RUNTIME = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
RUNTIME_PREFIXES = ("LC_",)
# The way out of a machine behind a proxy or a TLS-inspecting gateway, for the processes that
# export or call out (OMNI2's model provider).
NETWORK = frozenset(
    {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR"}
)
# The interpreter's own settings (PYTHONPATH, PYTHONUNBUFFERED, ...) and its virtualenv.
PYTHON = frozenset({"VIRTUAL_ENV"})
PYTHON_PREFIXES = ("PYTHON",)
JAVA = frozenset({"JAVA_HOME", "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"})
OTEL_PREFIX = "OTEL_"

# `${env:NAME}` (OpenTelemetry collector configs: Jaeger) and `env "NAME"` (Go templates:
# Traefik's dynamic files).
_CONFIG_VARIABLE = re.compile(
    r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)|\benv \"([A-Za-z_][A-Za-z0-9_]*)\""
)


@dataclass(frozen=True)
class Allowed:
    """Variable names (upper case) and name prefixes a process may inherit."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def __or__(self, other: Allowed) -> Allowed:
        return Allowed(self.names | other.names, self.prefixes + other.prefixes)

    def admits(self, name: str) -> bool:
        # Upper case: pydantic-settings matches variable names case-insensitively.
        upper = name.upper()
        return upper in self.names or upper.startswith(self.prefixes)


RUNTIME_ALLOWED = Allowed(RUNTIME, (*RUNTIME_PREFIXES, OTEL_PREFIX))
PYTHON_ALLOWED = RUNTIME_ALLOWED | Allowed(PYTHON | NETWORK, PYTHON_PREFIXES)


def settings_variables(cls: type[BaseSettings]) -> frozenset[str]:
    """The environment variables a pydantic-settings class reads: its prefix plus each field's
    name, or the field's alias(es) where it has one (an alias takes no prefix)."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for name, field in cls.model_fields.items():
        aliases = list(_alias_names(field.validation_alias)) or list(_alias_names(field.alias))
        names.update(aliases or [f"{prefix}{name}"])
    return frozenset(n.upper() for n in names)


class UnknownSetting(LookupError):
    """A name the runner sets that the service's settings class does not read."""


def env_name(cls: type[BaseSettings], setting: str) -> str:
    """The environment variable that sets `setting` of a pydantic-settings class: the field's
    (first) alias, or the class's prefix and the field's name. A field the class does not have
    raises: a renamed setting fails the runner's plan (and its tests), not a running stack."""
    field = cls.model_fields.get(setting)
    if field is None:
        raise UnknownSetting(f"{cls.__name__} has no setting {setting!r}")
    aliases = list(_alias_names(field.validation_alias)) or list(_alias_names(field.alias))
    prefix = str(cls.model_config.get("env_prefix") or "")
    return (aliases[0] if aliases else f"{prefix}{setting}").upper()


def settings_env(cls: type[BaseSettings], **values: str) -> dict[str, str]:
    """The environment that gives a service's settings class these values, by field name."""
    return {env_name(cls, setting): value for setting, value in values.items()}


def _alias_names(alias: str | AliasPath | AliasChoices | None) -> Iterable[str]:
    if isinstance(alias, str):
        yield alias
    elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
        yield alias.path[0]
    elif isinstance(alias, AliasChoices):
        for choice in alias.choices:
            yield from _alias_names(choice)


def config_variables(*paths: Path) -> frozenset[str]:
    """The variables a Jaeger or Traefik config file takes from its environment."""
    names: set[str] = set()
    for path in paths:
        for match in _CONFIG_VARIABLE.finditer(path.read_text()):
            names.add((match.group(1) or match.group(2)).upper())
    return frozenset(names)


def inherited(allowed: Allowed, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What of `environ` (default: this process's) a process with `allowed` may inherit."""
    source = os.environ if environ is None else environ
    return {name: value for name, value in source.items() if allowed.admits(name)}


def allowed_environment(service: str) -> Allowed:
    """What the runner's process `service` may inherit, from what it reads."""
    if service in _PYTHON_SERVICES:
        return PYTHON_ALLOWED | Allowed(settings_variables(_settings_class(service)))
    if service == "traefik":
        return RUNTIME_ALLOWED | Allowed(NETWORK | config_variables(_TRAEFIK / "dynamic.yml"))
    if service == "otlp-balancer":
        return RUNTIME_ALLOWED | Allowed(config_variables(_TRAEFIK / "otlp-balancer-dynamic.yml"))
    if service == "jaeger" or service.startswith("jaeger-"):
        configs = [_JAEGER / "config.yaml", *sorted((_JAEGER / "scale").glob("*.yaml"))]
        return RUNTIME_ALLOWED | Allowed(config_variables(*configs))
    if service == "kafka":
        return RUNTIME_ALLOWED | Allowed(JAVA)
    return RUNTIME_ALLOWED  # prometheus: its config file says everything


_TRAEFIK = CONFIG_DIR / "traefik"
_JAEGER = CONFIG_DIR / "jaeger"
# The runner's Python processes; a replica (omni2-2, dashboard-2) reads what its first does.
_PYTHON_SERVICES = frozenset(
    {"auth", "mcp-tools", "omni2", "omni2-2", "dashboard", "dashboard-2", "frontend", "flowview"}
)


def _settings_class(service: str) -> type[BaseSettings]:
    # Imported here: the toolkit installs without the services' packages.
    base = service.removesuffix("-2")
    if base == "auth":
        from services.auth.settings import AuthSettings

        return AuthSettings
    if base == "mcp-tools":
        from services.mcp_tools.settings import McpToolsSettings

        return McpToolsSettings
    if base == "omni2":
        from services.omni2.settings import Omni2Settings

        return Omni2Settings
    if base == "dashboard":
        from services.dashboard.settings import DashboardSettings

        return DashboardSettings
    if base == "frontend":
        from services.frontend.settings import FrontendSettings

        return FrontendSettings
    from omni_trace.flowview.settings import FlowViewSettings

    return FlowViewSettings
