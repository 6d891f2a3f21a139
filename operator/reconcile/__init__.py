"""The operator's I/O layer: database transactions, server-side apply, status and Events.

One reconcile per MLServe (:mod:`.mlserve`) composes the steps, each in its own module:
:mod:`.deploy` (MLServe → database), :mod:`.apply` (children), :mod:`.status`,
:mod:`.events`, :mod:`.finalize` (deletion) and :mod:`.rollback`.
"""
