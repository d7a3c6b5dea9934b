"""The real PostgreSQL of tests/postgres.py for the multi-process tests."""

from tests.postgres import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
