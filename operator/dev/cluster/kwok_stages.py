"""Our kwok Stages beside kwok's defaults: pods that fail on demand, keyed on one pod label,
and pods Ready again once their node is back.

kwok's default pod Stages make every pod Running and Ready, and a Job's pod Succeeded. A test
that needs a pod to go wrong labels it (through the template of whatever creates it)
``kwok.mlserve.dev/outcome`` with one of :data:`OUTCOMES`:

- ``fail``: the container exits 1 (reason ``Error``): the pod is ``Failed`` (a Job's pod
  counts as a failed attempt);
- ``image-pull-error``: the container waits with reason ``ErrImagePull`` (or the annotation
  ``kwok.mlserve.dev/reason``, e.g. ``ImagePullBackOff``), as a kubelet reports an image it
  cannot pull; the pod stays ``Pending``, never Ready;
- ``hang``: Running and Ready, and never completes (a Job's pod runs until its deadline).

kwok picks among matching Stages at random by weight; so that a labelled pod follows only
these, :func:`with_our_stages` adds "the label does not exist" to every default pod Stage but
the deletion one (a labelled pod is still deleted as any other).

One more Stage plays a kubelet that comes back: a pod that is Running but not Ready (the
node lifecycle controller marks every pod of a node not Ready once the node's heartbeats
lapse, as they do while etcd or the API server is down) is made Ready again. kwok's own
Stages make a pod Ready only while it is Pending, so without it such a pod would never be
Ready again.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["OUTCOMES", "OUTCOME_LABEL", "REASON_ANNOTATION", "with_our_stages"]

OUTCOME_LABEL = "kwok.mlserve.dev/outcome"
REASON_ANNOTATION = "kwok.mlserve.dev/reason"
OUTCOMES = ("fail", "image-pull-error", "hang")

_KEY = f'.metadata.labels["{OUTCOME_LABEL}"]'


def _pod_stage(name: str, expressions: list[dict[str, Any]], template: str) -> dict[str, Any]:
    """A Stage of pods not being deleted that match ``expressions``: their status becomes
    ``template``."""
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    *expressions,
                ]
            },
            "weight": 1,
            "next": {"statusTemplate": template},
        },
    }


def _outcome_stage(outcome: str, extra: list[dict[str, Any]], template: str) -> dict[str, Any]:
    return _pod_stage(
        f"mlserve-pod-{outcome}", [{"key": _KEY, "operator": "In", "values": [outcome]}, *extra], template
    )


_PENDING = [{"key": ".status.phase", "operator": "In", "values": ["Pending"]}]


def _containers_and_phase(*, ready: bool, state: str, phase: str) -> str:
    """The end of a pod status template: every container of the pod's spec in ``state`` (the
    YAML under ``state:``, indented six spaces), then the pod's phase and start time."""
    flag = "true" if ready else "false"
    return (
        "containerStatuses:\n"
        "{{ range .spec.containers }}\n"
        "- image: {{ .image | Quote }}\n"
        "  name: {{ .name | Quote }}\n"
        f"  ready: {flag}\n"
        "  restartCount: 0\n"
        f"  started: {flag}\n"
        "  state:\n"
        f"{state}"
        "{{ end }}\n"
        f"phase: {phase}\n"
        "startTime: {{ $now | Quote }}\n"
    )


_FAIL = """{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: PodFailed
  type: Ready
""" + _containers_and_phase(
    ready=False,
    state="""    terminated:
      exitCode: 1
      finishedAt: {{ $now | Quote }}
      reason: Error
      message: "the container exited 1"
      startedAt: {{ $now | Quote }}
""",
    phase="Failed",
)

_IMAGE_PULL_ERROR = """{{ $now := Now }}
{{ $annotations := or .metadata.annotations dict }}
{{ $reason := or ( index $annotations "kwok.mlserve.dev/reason" ) "ErrImagePull" }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady
""" + _containers_and_phase(
    ready=False,
    state="""    waiting:
      reason: {{ $reason | Quote }}
      message: {{ printf "failed to pull image %q: not found" .image | Quote }}
""",
    phase="Pending",
)

_READY = """{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: ContainersReady
"""

_HANG = _READY + _containers_and_phase(
    ready=True,
    state="""    running:
      startedAt: {{ $now | Quote }}
""",
    phase="Running",
)

_RUNNING_NOT_READY = [
    {"key": ".status.phase", "operator": "In", "values": ["Running"]},
    {"key": '.status.conditions.[] | select( .type == "Ready" ) | .status', "operator": "NotIn", "values": ["True"]},
]

_STAGES = (
    _outcome_stage("fail", _PENDING, _FAIL),
    _outcome_stage(
        "image-pull-error",
        [*_PENDING, {"key": ".status.containerStatuses", "operator": "DoesNotExist"}],
        _IMAGE_PULL_ERROR,
    ),
    _outcome_stage("hang", _PENDING, _HANG),
    _pod_stage("mlserve-pod-ready-again", _RUNNING_NOT_READY, _READY),
)


def with_our_stages(default_stages: str) -> str:
    """kwok's default Stages (multi-document YAML) with ours added (the outcomes, and Ready
    again), and every default pod Stage but the deletion one made to skip labelled pods."""
    documents = [doc for doc in yaml.safe_load_all(default_stages) if doc]
    for stage in documents:
        spec = stage.get("spec") or {}
        is_pod = (spec.get("resourceRef") or {}).get("kind") == "Pod"
        deletes = any(
            e.get("key") == ".metadata.deletionTimestamp" and e.get("operator") == "Exists"
            for e in (spec.get("selector") or {}).get("matchExpressions") or []
        )
        if is_pod and not deletes:
            expressions = spec.setdefault("selector", {}).setdefault("matchExpressions", [])
            expressions.append({"key": _KEY, "operator": "DoesNotExist"})
    return yaml.safe_dump_all([*documents, *_STAGES], sort_keys=False)
