#!/usr/bin/env bash
# A local certificate authority and the broker's TLS certificate for configs/mosquitto/.
#
#   make-certs.sh OUT_DIR BROKER_HOSTNAME... [--client NAME]...
#
# OUT_DIR gets ca.crt / ca.key (the CA: keep ca.key offline), server.crt / server.key (for
# the broker; its names: every BROKER_HOSTNAME plus localhost and 127.0.0.1) and, for each
# --client NAME, NAME.crt / NAME.key (optional mutual TLS: broker.cert_file / key_file).
# Existing CA files are reused, so running it again adds or renews certificates only.
# Private keys are written 0600. Needs openssl.
set -euo pipefail

usage() { echo "usage: $0 OUT_DIR BROKER_HOSTNAME... [--client NAME]..." >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift
hosts=()
clients=()
while [ $# -gt 0 ]; do
    case $1 in
        --client) [ $# -ge 2 ] || usage; clients+=("$2"); shift 2 ;;
        -*) usage ;;
        *) hosts+=("$1"); shift ;;
    esac
done
days=${CERT_DAYS:-825}  # under the 825-day limit some TLS clients enforce on leaf certificates

mkdir -p "$out"
umask 077
cd "$out"

if [ ! -f ca.key ] || [ ! -f ca.crt ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 3650 -subj "/CN=distree-mqtt local CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

# One leaf certificate signed by the CA: $1 name, $2 subject CN, $3 extensions.
sign() {
    local name=$1 common_name=$2 extensions=$3
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name.key" -out "$name.csr" -subj "/CN=$common_name" 2>/dev/null
    printf '%s\n' "$extensions" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out "$name.crt" -days "$days" -sha256 -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

# Subject alternative names: DNS names and IP addresses, always localhost and 127.0.0.1.
san="DNS:localhost,IP:127.0.0.1"
for host in "${hosts[@]}"; do
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then
        san="$san,IP:$host"
    else
        san="$san,DNS:$host"
    fi
done
common_name=${hosts[0]:-localhost}
sign server "$common_name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san"

for client in "${clients[@]}"; do
    sign "$client" "$client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
done

chmod 0644 ./*.crt
echo "wrote $out: ca.crt, server.crt, server.key (SAN $san)${clients:+, client certificates: ${clients[*]}}"
