"""Routers of the ``/v1`` API and the unauthenticated health endpoints."""
