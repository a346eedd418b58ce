"""Configuration from AUTHZ_* environment variables, validated at start."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from authz import census
from authz.store import DEFAULT_URL

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message says which and why."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _level(env: Mapping[str, str], name: str, default: str) -> int:
    """A logging level given by name (any case), as the number ``logging`` uses."""
    raw = env.get(name) or default
    if raw.strip().upper() not in LOG_LEVELS:
        raise ConfigError(f"{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return logging.getLevelNamesMapping()[raw.strip().upper()]


def _policy_dir(env: Mapping[str, str]) -> Path:
    raw = env.get("AUTHZ_POLICY_DIR")
    if raw:
        path = Path(raw)
    elif (Path.cwd() / "policies.polar").is_file():
        path = Path.cwd()
    else:
        path = PROJECT_ROOT
    if not (path / "policies.polar").is_file():
        raise ConfigError(f"AUTHZ_POLICY_DIR={path} holds no policies.polar")
    return path


def _file(path: str) -> dict[str, str]:
    """Read ``NAME=value`` lines (blank lines and # comments allowed) from a settings file."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"AUTHZ_CONFIG_FILE={path} cannot be read: {exc.strerror}") from exc
    found = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name.startswith("AUTHZ_"):
            raise ConfigError(f"{path}:{number}: expected AUTHZ_NAME=value, got {line!r}")
        found[name] = value.strip().strip('"').strip("'")
    return found


def from_env(env: Mapping[str, str] | None = None) -> dict:
    """Read every setting, with defaults; raise ``ConfigError`` on a bad value.

    ``AUTHZ_CONFIG_FILE`` may name a file of ``AUTHZ_NAME=value`` lines; variables in
    the environment win over the file.
    """
    env = dict(os.environ if env is None else env)
    if env.get("AUTHZ_CONFIG_FILE"):
        env = {**_file(env["AUTHZ_CONFIG_FILE"]), **env}
    production = env.get("AUTHZ_ENV", "development").strip().lower()
    if production not in ("development", "production"):
        raise ConfigError(f"AUTHZ_ENV must be development or production, got {production!r}")
    if production == "production" and not env.get("AUTHZ_DATABASE_URL"):
        raise ConfigError("AUTHZ_ENV=production needs AUTHZ_DATABASE_URL: no default database in production")
    return {
        # development (defaults allowed) or production (every needed setting explicit).
        "AUTHZ_ENV": production,
        # SQLite file by default; a postgresql+psycopg:// URL at scale.
        "AUTHZ_DATABASE_URL": env.get("AUTHZ_DATABASE_URL") or DEFAULT_URL,
        # Folder holding policies.polar and policies/.
        "AUTHZ_POLICY_DIR": _policy_dir(env),
        # Validity of an activation link.
        "AUTHZ_ACTIVATION_TTL": timedelta(hours=_int(env, "AUTHZ_ACTIVATION_TTL_HOURS", 7 * 24)),
        # Largest request body accepted, in bytes.
        "MAX_CONTENT_LENGTH": _int(env, "AUTHZ_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
        # Items per /access/v1/evaluations call.
        "AUTHZ_MAX_EVALUATIONS": _int(env, "AUTHZ_MAX_EVALUATIONS", 1000),
        # Search page sizes: default when page.limit is absent, and the largest allowed.
        "AUTHZ_DEFAULT_PAGE_SIZE": _int(env, "AUTHZ_DEFAULT_PAGE_SIZE", 1000),
        "AUTHZ_MAX_PAGE_SIZE": _int(env, "AUTHZ_MAX_PAGE_SIZE", 10000),
        # How often each server worker looks for edited policy files (0: never).
        "AUTHZ_POLICY_WATCH_SECONDS": _int(env, "AUTHZ_POLICY_WATCH_SECONDS", 2, minimum=0),
        # Base URL advertised in /.well-known/authzen-configuration (default: the request's).
        "AUTHZ_PUBLIC_URL": env.get("AUTHZ_PUBLIC_URL") or None,
        # Answers kept per worker, and for how long at most (an end date or a change ends them sooner).
        # The size counts the facts held (one per answer plus one per link): about 0.7 KiB each,
        # so a full cache holds about 35 MiB per worker at the default (RELIABILITY.md, Soak).
        "AUTHZ_DECISION_CACHE_SIZE": _int(env, "AUTHZ_DECISION_CACHE_SIZE", 50_000, minimum=0),
        "AUTHZ_DECISION_CACHE_SECONDS": _int(env, "AUTHZ_DECISION_CACHE_SECONDS", 300, minimum=1),
        # The file where the workers of one server share the facts they read (authz/shared_facts.py):
        # `authz serve` makes one for each run; empty, each worker reads its own.
        "AUTHZ_SHARED_FACTS": env.get("AUTHZ_SHARED_FACTS") or None,
        # Proxies in front of the service (load balancers) whose X-Forwarded-For names the client.
        "AUTHZ_TRUSTED_PROXIES": _int(env, "AUTHZ_TRUSTED_PROXIES", 0, minimum=0),
        # Wrong API keys or activation links one address may send per window before a 429 (0: off).
        "AUTHZ_GUESS_LIMIT": _int(env, "AUTHZ_GUESS_LIMIT", 20, minimum=0),
        "AUTHZ_GUESS_WINDOW_SECONDS": _int(env, "AUTHZ_GUESS_WINDOW_SECONDS", 60),
        # Level of the service's JSON log lines on stderr (one per request, at INFO).
        "AUTHZ_LOG_LEVEL": _level(env, "AUTHZ_LOG_LEVEL", "INFO"),
        # Where impact reports keep the census of the store's pairs between them ("off": nowhere).
        "AUTHZ_CACHE_DIR": census.folder(env),
        # Level of the one line per decision (DEBUG: quiet under the default AUTHZ_LOG_LEVEL).
        "AUTHZ_DECISION_LOG_LEVEL": _level(env, "AUTHZ_DECISION_LOG_LEVEL", "INFO"),
    }
