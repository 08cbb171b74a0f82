#!/usr/bin/env bash
# Random broker passwords for every user of the ACL, and Mosquitto's password file.
#
#   make-passwords.sh OUT_DIR [USER...]
#
# Without USERs, every `user` of the acl file beside this script gets one. Writes
# OUT_DIR/credentials/<user> (the password alone, mode 0600: copy it to the component's host
# and hand it over as the systemd credential `broker-password`, or name it in
# broker.password_file) and OUT_DIR/passwd (salted PBKDF2 hashes of every credential in
# OUT_DIR/credentials, for the broker's password_file). An existing credential is kept, so
# running it again only adds new users; delete a credential file and run it again to rotate
# (or, without USERs, to revoke) that password. Passwords are never printed and never
# passed on a command line (mosquitto_passwd -U hashes a 0600 file in place). Needs
# mosquitto_passwd (Debian: package mosquitto).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [USER...]" >&2; exit 2; }
out=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
acl=${DISTREE_ACL_FILE:-$here/acl}
if [ $# -gt 0 ]; then
    users=("$@")
else
    mapfile -t users < <(awk '$1 == "user" { print $2 }' "$acl")
fi
[ ${#users[@]} -gt 0 ] || { echo "$0: no users (none in $acl)" >&2; exit 2; }
command -v mosquitto_passwd >/dev/null || { echo "$0: mosquitto_passwd not found (apt-get install mosquitto)" >&2; exit 1; }

umask 077
mkdir -p "$out/credentials"
plain=$(mktemp "$out/.passwd.XXXXXX")
trap 'rm -f "$plain"' EXIT
for user in "${users[@]}"; do
    case $user in
        *:* | "" | *[[:space:]]*) echo "$0: invalid username '$user'" >&2; exit 2 ;;
    esac
    credential=$out/credentials/$user
    if [ ! -s "$credential" ]; then
        # 32 random bytes, base64 without the characters that need quoting anywhere.
        head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' | head -c 40 > "$credential"
        chmod 0600 "$credential"
    fi
done
for credential in "$out"/credentials/*; do
    printf '%s:%s\n' "$(basename "$credential")" "$(cat "$credential")" >> "$plain"
done
mosquitto_passwd -U "$plain"
mv "$plain" "$out/passwd"
trap - EXIT
echo "wrote $out/passwd ($(wc -l < "$out/passwd") users) and $out/credentials/<user>"
