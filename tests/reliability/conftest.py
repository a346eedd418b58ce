"""The reliability tests share one fixture: a private PostgreSQL server per module."""

from tests.reliability.private_postgres import private_postgres  # noqa: F401 - a fixture
