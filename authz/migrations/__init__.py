"""Alembic migration environment for the authz schema (see ``authz.migrate``)."""
