# Installs Synapse from PyPI into a virtualenv under target/ (reused while its
# version matches) and exports PUSHGATE_SYNAPSE_PYTHON for tests/synapse.rs.
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"

install_synapse() {
    local venv="target/synapse-venv"
    if [[ ! -x "$venv/bin/python" ]] \
        || ! "$venv/bin/python" -c "import synapse, sys; sys.exit(synapse.__version__ != '$SYNAPSE_VERSION')" 2>/dev/null; then
        rm -rf "$venv"
        mkdir -p target
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
    fi
    PUSHGATE_SYNAPSE_PYTHON="$(pwd)/$venv/bin/python"
    export PUSHGATE_SYNAPSE_PYTHON
}
