"""Persistence: SQLAlchemy 2.0 models and sessions. Migrations live in ``migrations/``."""
