# Shared set-up for the project's commands: a virtual environment in .venv with the
# package installed in editable mode. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MLSERVE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# ensure_venv [EXTRAS]: the package alone, or with the named extras (e.g. "test").
ensure_venv() {
    local extras="${1:-}"
    local target="$ROOT"
    if [ -n "$extras" ]; then target="$ROOT[$extras]"; fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating the virtual environment in $VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip
    fi
    # Reinstall only when the dependencies changed since the last install. The versions are
    # those of requirements.lock (what CI and the image install), so every run tests the same.
    local stamp="$VENV/.mlserve-installed-${extras:-base}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/requirements.lock" -nt "$stamp" ]; then
        echo "==> installing $target into $VENV (versions of requirements.lock)"
        "$VENV/bin/pip" install --quiet -c "$ROOT/requirements.lock" -e "$target"
        # Earlier versions installed asyncmy, which Tortoise takes over aiomysql when present.
        "$VENV/bin/pip" uninstall --quiet --yes asyncmy 2>/dev/null || true
        touch "$stamp"
    fi
}

# The test suite starts its own throwaway MariaDB server from Debian's package.
ensure_mariadb() {
    if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then
        return 0
    fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: the tests need a MariaDB server binary (mariadbd); install it with" >&2
        echo "       sudo apt-get install mariadb-server   (or set MLSERVE_TEST_MYSQL_URL)" >&2
        exit 1
    fi
    echo "==> installing mariadb-server (the tests start their own throwaway server)"
    apt-get update -qq
    # Installing must not start a system-wide server: the tests start their own.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
        mariadb-server mariadb-client >/dev/null
}

# KubeRay's CRDs, which the tests validate RayJobs against and install, and the demo installs:
# downloaded once with KubeRay's Go module (`mlserve dev kuberay-crds`), exported as
# MLSERVE_KUBERAY_CRDS; a folder already given there is used as it is.
ensure_kuberay_crds() {
    if [ -n "${MLSERVE_KUBERAY_CRDS:-}" ]; then
        return 0
    fi
    echo "==> fetching (or reusing) KubeRay's CRDs"
    MLSERVE_KUBERAY_CRDS="$("$VENV/bin/mlserve" dev kuberay-crds)"
    export MLSERVE_KUBERAY_CRDS
}

# Docker (Debian's docker.io: dockerd, runc, the client) and mmdebstrap, for the suite on kind.
# Installed with apt-get when missing and running as root; otherwise a message says what to install.
ensure_kind_prerequisites() {
    local missing=()
    if ! command -v dockerd >/dev/null 2>&1 && ! [ -x /usr/sbin/dockerd ] && ! docker version >/dev/null 2>&1; then
        missing+=(docker.io)
    fi
    if ! command -v mmdebstrap >/dev/null 2>&1; then missing+=(mmdebstrap); fi
    if [ "${#missing[@]}" -eq 0 ]; then return 0; fi
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: the suite on kind needs ${missing[*]}; install with" >&2
        echo "       sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "==> installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
