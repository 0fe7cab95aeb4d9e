# Debian packages the tests need: PostgreSQL (store tests), promtool (from
# `prometheus`, checks the metrics exposition), a C compiler (ring, SQLite and
# mimalloc are built from C) and python3-venv (Synapse's virtualenv). Installed when missing if we
# may (root and apt-get); otherwise the command to run is printed.

ensure_test_packages() {
    local missing=()
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
    command -v promtool >/dev/null || missing+=(prometheus)
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
    install_missing_packages "the tests" "${missing[@]}"
}

# install_missing_packages WHO PACKAGE...: installs the Debian packages WHO needs (none: nothing to
# do) when we may (root and apt-get); otherwise prints the command to run and fails.
install_missing_packages() {
    local who=$1
    shift
    [[ $# -eq 0 ]] && return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $* (Debian packages $who needs)" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    else
        echo "$who needs Debian packages: sudo apt-get install $*" >&2
        return 1
    fi
}
