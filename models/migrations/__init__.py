"""Schema migrations of the ``models`` app, written by Tortoise's ``makemigrations``."""
