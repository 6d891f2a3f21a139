"""Container image references (``artifacts.image_url``): can this be pulled at all? Pure.

The grammar is the one container registries and the kubelet accept:
``[host[:port]/]path[:tag][@algorithm:hex]``, the path made of lower-case components joined
by ``/``, at most 255 characters before the tag. A reference that breaks it would only fail
later, on every node, as an image pull error; the reconcile refuses it first, naming the
artifact.
"""

from __future__ import annotations

import re

__all__ = ["image_reference_problem"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_HOST_PART}(?:\.{_HOST_PART})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"^(?P<name>(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*)(?::{_TAG})?(?:@{_DIGEST})?$")
_NAME_MAX = 255


def image_reference_problem(reference: str) -> str | None:
    """What makes ``reference`` unusable as a container image, or None when it can be pulled."""
    if reference != reference.strip() or any(c.isspace() for c in reference):
        return "holds white space: store the image reference alone, e.g. registry.example.com/team/model:1.0"
    match = _REFERENCE.match(reference)
    if match is None:
        return (
            "is not a container image reference ([host[:port]/]path[:tag][@sha256:digest], the path in "
            "lower case): store one, e.g. registry.example.com/team/model:1.0"
        )
    if len(match.group("name")) > _NAME_MAX:
        return f"names an image of more than {_NAME_MAX} characters (before the tag): use a shorter name"
    return None
