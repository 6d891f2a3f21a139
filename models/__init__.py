"""Darwin ML Serve database models (Tortoise ORM), importable as ``mlserve.models``."""
