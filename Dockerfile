# The operator's image: `mlserve run` as a non-root user, installed from the project's wheel.
#
#   docker build -t mlserve-operator:0.1.0 .
#
# The first stage builds the wheels (the project's and every dependency's) with whatever
# compilers they need; the final stage installs them from that folder, offline, and gets
# no compiler, no build cache and no source tree.
#
# No `# syntax=` line: the Dockerfile frontend built into Docker (20.10 and later, with
# BuildKit) has everything used here, and a syntax line would make every build pull the
# frontend's image (impossible offline). PYTHON_IMAGE may name any image with Python 3.11
# and pip first on PATH (offline, `scripts/e2e-kind` builds one from Debian).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Compilers for dependencies without a binary wheel for this platform (e.g. asyncmy on
# some architectures); they stay in this stage. Debian's build-essential is not pinned:
# its version follows the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY models/ models/
COPY operator/ operator/
# The dependencies at the versions of requirements.lock: every image build gets the same ones.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c requirements.lock .

FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed from the first stage's wheels through a bind mount: no wheel is left in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/mlserve_operator-*.whl \
 && groupadd --gid "${UID}" mlserve \
 && useradd --uid "${UID}" --gid "${UID}" --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin mlserve
# A numeric user, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER ${UID}:${UID}
WORKDIR /tmp
# kopf's liveness endpoint (MLSERVE_LIVENESS_ENDPOINT, http://0.0.0.0:8080/healthz).
EXPOSE 8080
ENTRYPOINT ["mlserve"]
CMD ["run"]
