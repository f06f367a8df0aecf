#!/usr/bin/env bash
# What PruneLab needs from the system besides .venv, installed with apt-get where it can be (root, or sudo without a
# password); otherwise one line naming what is missing and the command that installs it (exit 0: the caller goes on).
#   tools/system_packages.sh data            Debian's dataset-fashion-mnist (`make data`)
#   tools/system_packages.sh test PYTHON     that, a C++ compiler and PYTHON's headers (`make test`: the real-data
#                                            tests, and TorchInductor in tests/test_deploy.py)
# FASHION_DIR: where the package puts Fashion-MNIST (default /usr/share/datasets/fashion-mnist).
set -uo pipefail
what=${1:?usage: tools/system_packages.sh data|test [PYTHON]}
python=${2:-}
fashion_dir=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}

missing=() unfixable=()
[ -d "$fashion_dir" ] || missing+=(dataset-fashion-mnist)
if [ "$what" = test ]; then
    if ! command -v "${CXX:-g++}" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
        && ! command -v clang++ >/dev/null 2>&1; then
        missing+=(g++)
    fi
    if [ -n "$python" ]; then
        # TorchInductor compiles against the interpreter's Python.h: a distribution's Python keeps it in a -dev package.
        read -r include version < <("$python" -c \
            'import sys, sysconfig; print(sysconfig.get_path("include"), "%d.%d" % sys.version_info[:2])')
        if [ ! -f "$include/Python.h" ]; then
            case $include in
                /usr/include/*) missing+=("python$version-dev") ;;
                *) unfixable+=("the headers of $python ($include/Python.h)") ;;
            esac
        fi
    fi
fi
[ ${#unfixable[@]} -eq 0 ] || echo "make $what: missing ${unfixable[*]}: reinstall that Python with its headers"
if [ ${#missing[@]} -eq 0 ]; then
    [ "$what" = test ] || echo "Fashion-MNIST is installed in $fashion_dir"
    exit 0
fi

fix="sudo apt-get install ${missing[*]}"
if [ "$what" = test ]; then
    without="the tests that need them fail"
else
    without="configs reading Fashion-MNIST stop before any job, unless they set dataset.download: true"
fi
if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || sudo -n true >/dev/null 2>&1; }; then
    sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    echo "make $what: installing ${missing[*]} with apt-get"
    if $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        exit 0
    fi
    echo "make $what: apt-get could not install ${missing[*]}; $without. Fix: $fix"
else
    echo "make $what: ${missing[*]} not installed (no apt-get, or not root and no password-less sudo);" \
        "$without. Fix: $fix"
fi
exit 0
