"""The Celery worker: runs training jobs through ``app.transfer``."""
