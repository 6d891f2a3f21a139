"""Pure renderers: typed inputs (``mlserve.operator.spec``) to Kubernetes manifests (dicts).

No I/O, no clock, no randomness: the same inputs give the same manifests, byte for byte.
"""
