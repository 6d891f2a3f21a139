"""Properties that hold for all inputs (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from mlserve_testing.render_cases import api_context, spec_for
from mlserve_testing.schemas import DNS1035_LABEL, LABEL_VALUE

from mlserve.operator.render import RenderSettings, names, render_children
from mlserve.operator.spec import api

# Names the CRD accepts: serve (<= 50) and environment (<= 63) are DNS-1123 labels.
_label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z", fullmatch=True)
serves = _label.filter(lambda s: len(s) <= 50)
environments = _label
anything = st.text(min_size=1, max_size=120)
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(serves | anything, environments | anything)
def test_child_names_are_dns1035_labels_and_stable(serve: str, env: str) -> None:
    for name in (names.child_name(serve, env), names.mlserve_name(serve, env)):
        assert len(name) <= 63 and DNS1035_LABEL.match(name), name
    assert names.child_name(serve, env) == names.child_name(serve, env)


@given(serves | anything, environments | anything, st.none() | st.integers(min_value=1, max_value=2**63 - 1), times)
def test_ray_names_follow_kuberay_rules(serve: str, env: str, deployment_id: int | None, when: datetime) -> None:
    for name, limit in (
        (names.rayjob_name(serve, env, deployment_id), 47),
        (names.scheduled_rayjob_name(serve, env, when), 47),
        (names.raycronjob_name(serve, env), 41),
    ):
        assert len(name) <= limit and DNS1035_LABEL.match(name), name


@given(serves, environments, times, times)
def test_scheduled_names_differ_per_minute(serve: str, env: str, first: datetime, second: datetime) -> None:
    same_minute = first.replace(second=0, microsecond=0) == second.replace(second=0, microsecond=0)
    same_name = names.scheduled_rayjob_name(serve, env, first) == names.scheduled_rayjob_name(serve, env, second)
    assert same_minute == same_name


@given(serves, environments, serves, environments)
def test_names_differ_when_the_joined_names_differ(s1: str, e1: str, s2: str, e2: str) -> None:
    if f"{s1}-{e1}" != f"{s2}-{e2}":
        assert names.child_name(s1, e1) != names.child_name(s2, e2)
        assert names.rayjob_name(s1, e1, 7) != names.rayjob_name(s2, e2, 7)


@given(anything)
def test_label_values_are_valid(value: str) -> None:
    result = names.label_value(value)
    assert len(result) <= 63 and LABEL_VALUE.match(result), result


@given(serves, environments, st.integers(min_value=1), serves, environments, st.integers(min_value=1))
def test_selector_selects_exactly_the_serves_pods(s1: str, e1: str, d1: int, s2: str, e2: str, d2: int) -> None:
    own = names.selector(s1, e1)
    assert names.matches(own, names.labels(s1, e1, d1))
    assert names.matches(own, names.labels(s1, e1, d2)), "pods of another deployment of the serve stay selected"
    if (s1, e1) != (s2, e2):
        assert not names.matches(own, names.labels(s2, e2, d2))
    assert api.LABEL_DEPLOYMENT_ID not in own


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=1000), st.integers(min_value=0, max_value=1000), st.booleans())
def test_deployment_replicas_and_hpa_never_together(low: int, extra: int, via_spec: bool) -> None:
    high = min(low + extra, 1000)
    if via_spec:
        ctx = api_context()
        spec = spec_for(ctx, replicas={"min": low, "max": high})
    else:
        ctx = api_context(replicas=(low, high))
        spec = spec_for(ctx)
    manifests = render_children(ctx, spec, RenderSettings())
    kinds = {m["kind"]: m for m in manifests}
    has_hpa = "HorizontalPodAutoscaler" in kinds
    assert has_hpa == (low < high)
    assert ("replicas" in kinds["Deployment"]["spec"]) != has_hpa
    pod_labels = kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert names.matches(kinds["Deployment"]["spec"]["selector"]["matchLabels"], pod_labels)
    assert names.matches(kinds["Service"]["spec"]["selector"], pod_labels)
