"""The ``authz`` command: database, API keys, demo data, server, and checks at a terminal."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from authz import tokens
from authz.decisions import Decisions
from authz.demo import load_demo
from authz.engine import LoadedPolicy, policy_version, read_policy
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
    from sqlalchemy.engine import make_url

    from authz import migrate

    url = _settings()["AUTHZ_DATABASE_URL"]
    try:
        migrate.upgrade(url)
    except Exception as exc:
        raise click.ClickException(f"could not upgrade the schema: {exc}") from exc
    shown = make_url(url).render_as_string(hide_password=True)
    click.echo(f"schema up to date (revision {migrate.head()}) on {shown}")


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
@click.option("--size", type=click.Choice(["small", "medium", "large", "national"]), default=None,
              help="Instead of the story, load a synthetic dataset of this size into an empty database.")
@click.option("--seed", type=int, default=None, help="With --size: the dataset's seed (same seed, same data).")
def demo(size: str | None, seed: int | None) -> None:
    """Load the demo story (idempotent), or with --size a synthetic dataset."""
    settings = _settings()
    database = _database(settings)
    from authz import migrate

    migrate.upgrade(settings["AUTHZ_DATABASE_URL"])
    if size is not None:
        from authz import dataset

        started = time.perf_counter()
        try:
            loaded = dataset.load_dataset(
                database, size, seed=dataset.DEFAULT_SEED if seed is None else seed,
                progress=lambda message: click.echo(f"  {message}"),
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"dataset {size} (seed {loaded.seed}) loaded in {time.perf_counter() - started:.1f}s "
                   f"({loaded.method}):")
        for line in loaded.lines():
            click.echo(f"  {line}")
        return
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


# ---- policy administration ------------------------------------------------------------------


@main.group()
def policy() -> None:
    """Check, test and measure policy drafts before they go live."""


def _print_problems(problems) -> None:
    for problem in problems:
        where = ":".join(str(part) for part in (problem.file, problem.line, problem.column) if part is not None)
        click.echo(f"{where or '<policy>'}: {problem.message}")


@policy.command("check")
@click.argument("folder", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
def policy_check(folder: Path) -> None:
    """Compile the policy in FOLDER without applying it; list errors as file:line:column."""
    from authz.policy import check_draft

    try:
        problems = check_draft(read_policy(folder))
    except AuthzError as exc:
        raise click.ClickException(exc.message) from exc
    if problems:
        _print_problems(problems)
        sys.exit(1)
    click.echo(f"policy in {folder} is valid (version {policy_version(read_policy(folder))})")


@policy.command("test")
@click.argument("folder", default=".", type=click.Path(exists=True, file_okay=False, path_type=Path))
def policy_test(folder: Path) -> None:
    """Run the decision tables in FOLDER/policies/tests against the policy in FOLDER."""
    from authz.engine import Engine, PolicyRejected
    from authz.policy_tests import format_report, run_policy_tests

    try:
        engine = Engine(folder)
    except PolicyRejected as exc:
        _print_problems(exc.problems)
        sys.exit(1)
    report = run_policy_tests(engine, folder / "policies" / "tests")
    click.echo(format_report(report))
    sys.exit(0 if report.ok else 1)


@policy.command("census")
def policy_census() -> None:
    """Build the census that impact reports start from (authz.census), and the running
    policy's answers about it.

    Reports refresh a census for a day; the first report after that, on a new database
    or with a new version of the service builds it again (about a minute on a national
    store). This does it beforehand: after a deployment, and nightly from cron.
    """
    from authz import impact

    settings = _settings()
    place = settings["AUTHZ_CACHE_DIR"]
    if place is None:
        raise click.ClickException("AUTHZ_CACHE_DIR is off: impact reports keep no census")
    started = time.perf_counter()
    running = LoadedPolicy(settings["AUTHZ_POLICY_DIR"])()
    kept = impact.prepare(_database(settings), running, time.time(), place)
    if kept is None:
        raise click.ClickException("this database has no lasting identity (SQLite in memory): no census")
    click.echo(f"census built from the whole store in {time.perf_counter() - started:.1f}s: {kept.size} "
               f"(user, company) pairs, {len(kept.sirets)} companies, {len(kept.shapes)} shapes asked of "
               f"policy {running.version}; kept in {place}")


@policy.command("impact")
@click.argument("draft", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--limit", default=50, show_default=True, help="Changes to list (counts are always complete).")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Processes to share a large store between (only worth it with as many idle cores).")
def policy_impact(draft: Path, limit: int, workers: int) -> None:
    """Who gains and who loses which right, under the DRAFT folder's policy, over the current data."""
    from authz.engine import PolicyRejected
    from authz.policy import PolicyAdmin

    settings = _settings()
    admin = PolicyAdmin(_database(settings), LoadedPolicy(settings["AUTHZ_POLICY_DIR"]), workers=workers,
                        census_folder=settings["AUTHZ_CACHE_DIR"])
    try:
        found = admin.impact_of_draft(read_policy(draft))
    except PolicyRejected as exc:
        _print_problems(exc.problems)
        sys.exit(1)
    click.echo(f"checked {found.pairs_checked} (user, company) pairs: "
               f"{len(found.gained)} rights gained, {len(found.lost)} lost")
    for right, (gained, lost) in found.by_right().items():
        click.echo(f"  {right}: +{gained} -{lost}")
    for label, changes in (("+", found.gained), ("-", found.lost)):
        for change in changes[:limit]:
            click.echo(f"  {label} {change.user} {change.right} {change.company}")
        if len(changes) > limit:
            click.echo(f"  {label} ... and {len(changes) - limit} more")
    click.echo(f"in {found.seconds:.1f}s: {found.shapes} shapes, {found.questions} policy questions; "
               f"{found.method}")
