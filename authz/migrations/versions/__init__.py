"""Alembic revisions, applied in order by ``authz.migrate.upgrade``."""
