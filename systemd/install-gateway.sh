#!/usr/bin/env bash
# Lay out a distree-mqtt gateway: a virtual environment with torch and the package, settings
# in /etc/distree, the systemd units, and the credentials directory. Run as root from a checkout:
#
#   sudo systemd/install-gateway.sh --machine configs/deployments/home/mini-pc
#
# Options:
#   --machine DIR   copy DIR/*.yaml (one file per service on this machine) to /etc/distree
#   --skip-pip      lay out files only; no virtual environment, no package download
# Environment:
#   DESTDIR         stage everything under this directory instead of / (packaging, tests)
#   PREFIX          where the virtual environment lives (default /opt/distree)
#   PYTHON          interpreter for the virtual environment (default python3, 3.11 or newer)
#   TORCH_VERSION   torch pinned in the virtual environment (default 2.13.0)
# Existing files in /etc/distree are never overwritten; units are always refreshed.
set -euo pipefail

SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/distree}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
ETC=$DESTDIR/etc/distree
UNITS=$DESTDIR/etc/systemd/system
MACHINE=
SKIP_PIP=0

fail() {
    echo "install-gateway: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case $1 in
        --machine)
            [ $# -ge 2 ] || fail "--machine needs a directory"
            MACHINE=$2
            shift 2
            ;;
        --skip-pip)
            SKIP_PIP=1
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done

[ -n "$DESTDIR" ] || [ "$(id -u)" -eq 0 ] || fail "run as root (or set DESTDIR to stage the files elsewhere)"
case $PREFIX in /*) ;; *) fail "PREFIX must be an absolute path, got $PREFIX" ;; esac
[ -z "$MACHINE" ] || [ -d "$MACHINE" ] || fail "--machine $MACHINE: no such directory"

# 1. The package, in its own virtual environment (torch pinned: an unpinned one pulls a
#    multi-GB CUDA build on x86).
if [ "$SKIP_PIP" -eq 0 ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || fail "$PYTHON is older than Python 3.11"
    "$PYTHON" -m venv "$DESTDIR$PREFIX/venv"
    "$DESTDIR$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
    "$DESTDIR$PREFIX/venv/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    "$DESTDIR$PREFIX/venv/bin/python" -m pip install -q "$SOURCE"
    echo "installed distree-mqtt and torch $TORCH_VERSION in $PREFIX/venv"
fi

# 2. Settings: the machine's files, then every example deployment for reference.
install -d -m 0755 "$ETC"
copy_new() { # copy_new SOURCE TARGET: never replace an operator's file
    if [ -e "$2" ]; then
        echo "kept existing ${2#"$DESTDIR"}"
    else
        install -m 0644 "$1" "$2"
        echo "added ${2#"$DESTDIR"}"
    fi
}
if [ -n "$MACHINE" ]; then
    for file in "$MACHINE"/*.yaml; do
        [ -e "$file" ] || fail "--machine $MACHINE holds no .yaml files"
        copy_new "$file" "$ETC/$(basename "$file")"
    done
fi
if [ -d "$SOURCE/configs/deployments" ]; then
    (cd "$SOURCE/configs/deployments" && find . -type f \( -name '*.yaml' -o -name '*.md' \)) |
        while read -r file; do
            install -d -m 0755 "$(dirname "$ETC/examples/$file")"
            copy_new "$SOURCE/configs/deployments/$file" "$ETC/examples/${file#./}" >/dev/null
        done
fi

# 3. Credentials: readable by root only; systemd hands them to the services (LoadCredential=).
#    The units need the file to exist; empty means "no password".
install -d -m 0700 "$ETC/credentials"
if [ ! -e "$ETC/credentials/broker-password" ]; then
    install -m 0600 /dev/null "$ETC/credentials/broker-password"
fi

# 4. Units, pointed at this PREFIX.
install -d -m 0755 "$UNITS" "$UNITS/mosquitto.service.d"
for unit in distree-device@.service distree-orchestrator.service distree-camera@.service; do
    sed "s|/opt/distree/|$PREFIX/|g" "$SOURCE/systemd/$unit" >"$UNITS/$unit"
    chmod 0644 "$UNITS/$unit"
done
install -m 0644 "$SOURCE/systemd/mosquitto.service.d/distree.conf" "$UNITS/mosquitto.service.d/distree.conf"
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

# 5. What to do next.
echo
echo "Next steps:"
echo "  1. the broker password, if the broker wants one (the file stays root-only):"
echo "       install -m 0600 /dev/stdin /etc/distree/credentials/broker-password <<<'secret'"
services=()
for file in "$ETC"/*.yaml; do
    [ -e "$file" ] || continue
    name=$(basename "$file" .yaml)
    role=$(sed -n 's/^role:[[:space:]]*\([a-z]*\).*/\1/p' "$file" | head -n 1)
    case $role:$name in
        orchestrator:* | :orchestrator) services+=("distree-orchestrator") ;;
        camera:* | :camera*) services+=("distree-camera@$name") ;;
        *) services+=("distree-device@$name") ;;
    esac
done
if [ ${#services[@]} -eq 0 ]; then
    echo "  2. write /etc/distree/<name>.yaml for each service (examples: /etc/distree/examples/)"
    echo "  3. systemctl enable --now distree-device@<name> (or distree-camera@<name>, distree-orchestrator)"
else
    echo "  2. check the settings in /etc/distree/*.yaml"
    echo "  3. systemctl enable --now ${services[*]}"
fi
echo "  4. journalctl -u 'distree-*' -f     # logs;  systemctl status 'distree-*'  # live STATUS lines"
