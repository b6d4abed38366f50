#!/usr/bin/env bash
# Create the virtual environment .venv with DOLFINx 0.11 (PyPI wheel), PyTorch and dolfinx_nn.
#
# DOLFINx 0.11 wheels need Python >= 3.12.  We look for one on PATH first, then in pyenv's
# version folders, and *run* each candidate (pyenv shims exist even for versions that are
# not selected and fail when called).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$here/.venv}"
extras="${EXTRAS:-dolfinx,test}"

usable() { "$1" -c 'import sys, venv; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; }

find_python() {
    local p
    for p in "${PYTHON:-}" python3.13 python3.12 python3; do
        [ -n "$p" ] && command -v "$p" >/dev/null 2>&1 && usable "$p" && { command -v "$p"; return; }
    done
    local root="${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}"
    for p in "$root"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$p" ] && usable "$p" && { echo "$p"; return; }
    done
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    py="$(find_python)" || {
        echo "error: dolfinx_nn needs Python >= 3.12 (the DOLFINx 0.11 wheels do)." >&2
        echo "       None was found on PATH or under pyenv's versions/." >&2
        echo "       Install one, or point PYTHON=/path/to/python3.12 at it." >&2
        exit 1
    }
    echo "Creating $venv with $py ($("$py" --version))"
    "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "$here[$extras]"
if [ "${WITH_PEERS:-0}" = 1 ]; then
    # Peers measured by the benchmarks. dolfinx-adjoint requires the conda package name
    # fenics-dolfinx, which pip would try to build: install it without dependencies.
    "$venv/bin/python" -m pip install -q -e "$here[bench]"
    "$venv/bin/python" -m pip install -q --no-deps dolfinx-adjoint fenicsx-compat
    "$venv/bin/python" -m pip install -q pyadjoint-ad h5py
fi
"$venv/bin/python" -c 'import dolfinx_nn, dolfinx, torch; print("dolfinx", dolfinx.__version__, "| torch", torch.__version__)'
