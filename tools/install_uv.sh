#!/usr/bin/env bash
# `make uv`: install uv VERSION into DIR (DIR/bin/uv) with PYTHON, without installing anything into PYTHON itself.
#   tools/install_uv.sh PYTHON VERSION DIR
# `pip install --target` writes only DIR, so a distribution's externally managed Python (PEP 668) can do it; a
# Python without pip makes a small venv DIR/venv instead. Neither: one line saying what to install, exit 1.
set -euo pipefail
python=$1 version=$2 dir=$3

rm -rf "$dir"
if "$python" -m pip --version >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check \
        --target "$dir" "uv==$version"
elif "$python" -m venv "$dir/venv" >/dev/null 2>&1; then
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$version"
    mkdir -p "$dir/bin"
    ln -s ../venv/bin/uv "$dir/bin/uv"
else
    rm -rf "$dir"
    echo "make uv: $python has neither pip nor venv to install uv $version with; install one" \
        "(Debian/Ubuntu: sudo apt-get install python3-pip), or put uv $version on PATH" >&2
    exit 1
fi
echo "uv $version installed in $dir/bin/uv"
