#!/bin/sh
# Makes a test PKI with the openssl CLI (EC P-256, valid 2 days):
#   certs.sh DIR NAME[=DNS1,DNS2,...] ...
# DIR/ca.crt|key     the test CA that signs every NAME
# DIR/rogue.crt|key  another CA, trusted by nobody (for "unknown CA" tests)
# DIR/NAME.crt|key   a server certificate for NAME (CN=NAME); subjectAltName DNS entries from the list after
#                    "=", NAME alone when none given; "NAME=" (empty list) makes a certificate without SAN.
set -eu
dir=$1
shift
mkdir -p "$dir"
cd "$dir"
ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
for ca in ca rogue; do
    [ -f $ca.crt ] || openssl req -x509 $ec -keyout $ca.key -out $ca.crt -days 2 -subj "/CN=Sluice test $ca" 2>/dev/null
done
for spec in "$@"; do
    name=${spec%%=*}
    case "$spec" in *=*) sans=${spec#*=} ;; *) sans=$name ;; esac
    openssl req $ec -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
    {
        echo "basicConstraints=CA:FALSE"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        if [ -n "$sans" ]; then
            echo "subjectAltName=DNS:$(echo "$sans" | sed 's/,/,DNS:/g')"
        fi
    } > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -out "$name.crt" -days 2 \
        -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
done
