"""The mlserve operator, importable as ``mlserve.operator``."""
