"""Shared core: models, errors, OAuth helpers and crypto. No Jupyter imports here."""
