"""The ``authz`` command: database, API keys, demo data, server, and checks at a terminal."""

from __future__ import annotations

import sys

import click

from authz import tokens
from authz.decisions import Decisions
from authz.demo import load_demo
from authz.engine import LoadedPolicy
from authz.errors import AuthzError
from authz.identifiers import normalize_email
from authz.model import KeyRole
from authz.store import Database
from authz.tables import utcnow
from authz.usecases import Management
from service import config


def _settings() -> dict:
    try:
        return config.from_env()
    except config.ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from exc


def _database(settings: dict) -> Database:
    return Database(settings["AUTHZ_DATABASE_URL"])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Authorization service for delegated access (AuthZEN 1.0 + delegation management)."""


# ---- database ---------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or update the schema on AUTHZ_DATABASE_URL."""
    settings = _settings()
    database = _database(settings)
    try:
        database.create_schema()
    except Exception as exc:  # noqa: BLE001 - report any driver error plainly
        raise click.ClickException(f"could not create the schema: {exc}") from exc
    click.echo(f"schema up to date on {database.engine.url.render_as_string(hide_password=True)}")


# ---- API keys ----------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """API keys (stored hashed; shown once)."""


@keys.command("create")
@click.option("--role", required=True, type=click.Choice([role.value for role in KeyRole]))
@click.option("--name", help="A unique name for the key (default: ROLE-<random>).")
def keys_create(role: str, name: str | None) -> None:
    """Create a key and print it as the last line (it is not stored, only its hash)."""
    database = _database(_settings())
    name = name or f"{role}-{tokens.new_secret()[:8]}"
    secret = tokens.new_secret("authz_")
    with database.transaction() as tx:
        if name in tx.api_key_names():
            raise click.ClickException(f"a key named {name!r} already exists")
        tx.insert_api_key(name, role, tokens.digest(secret), utcnow())
    click.echo(f"created {role} key {name!r}; it will not be shown again:", err=True)
    click.echo(secret)


@keys.command("revoke")
@click.argument("name")
def keys_revoke(name: str) -> None:
    """Revoke a key by name; calls with it get 401 at once."""
    database = _database(_settings())
    with database.transaction() as tx:
        if not tx.revoke_api_key(name, utcnow()):
            raise click.ClickException(f"no active key named {name!r}")
    click.echo(f"revoked {name!r}")


# ---- demo and serve --------------------------------------------------------------------------


@main.command()
def demo() -> None:
    """Load the demo story (idempotent)."""
    settings = _settings()
    database = _database(settings)
    database.create_schema()
    summary = load_demo(Management(database, LoadedPolicy(settings["AUTHZ_POLICY_DIR"])))
    click.echo("demo loaded:" if summary.loaded else "demo already loaded:")
    for line in summary.lines:
        click.echo(f"  {line}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
def serve(host: str, port: int, workers: int) -> None:
    """Serve the API with gunicorn (each worker builds its own app after the fork)."""
    _settings()  # fail before forking if the configuration is wrong
    from service.server import run

    run(host, port, workers)


# ---- checks at a terminal -----------------------------------------------------------------


def _decisions() -> Decisions:
    settings = _settings()
    return Decisions(_database(settings), LoadedPolicy(settings["AUTHZ_POLICY_DIR"]))


@main.command()
@click.argument("user")
@click.argument("right")
@click.argument("siret")
def check(user: str, right: str, siret: str) -> None:
    """Print allow or deny for USER RIGHT SIRET; exit 0 on allow, 1 on deny."""
    try:
        decision = _decisions().decide(normalize_email(user), right, siret)
    except AuthzError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"{'allow' if decision.allowed else 'deny'} ({decision.reason})")
    sys.exit(0 if decision.allowed else 1)


@main.command()
@click.argument("user")
@click.argument("right")
@click.argument("siret")
def explain(user: str, right: str, siret: str) -> None:
    """Show the chain behind the decision for USER RIGHT SIRET."""
    try:
        found = _decisions().explain(normalize_email(user), right, siret)
    except AuthzError as exc:
        raise click.ClickException(exc.message) from exc
    verdict = "allow" if found.decision.allowed else "deny"
    click.echo(f"{verdict} ({found.decision.reason})")
    for link in found.chain:
        click.echo("  " + _describe(link))
    if found.broken:
        click.echo("  broken: " + _describe(found.broken))
    sys.exit(0 if found.decision.allowed else 1)


def _describe(link) -> str:
    parts = [f"{link.kind} {link.id or ''}".strip(), "holds" if link.holds else "does not hold"]
    if link.status:
        parts.append(f"status={link.status}")
    if link.scope is not None:
        parts.append(f"scope={','.join(link.scope)}")
    if link.ends_at:
        parts.append(f"ends_at={link.ends_at.isoformat()}")
    if link.detail:
        parts.append(f"({link.detail})")
    return " ".join(parts)
