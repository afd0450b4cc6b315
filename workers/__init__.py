"""Celery wiring: thin tasks over `monitor/`."""
