#!/bin/sh
# First start of the compose stack (the one-shot `secrets` service of docker-compose.yml, in the
# nginx image, as root): makes what the stack needs to be safe to expose, once, and keeps it in
# named volumes so later starts reuse it.
#
#   API key   $KEY_DIR/api_key: IMAGEGEN_API_KEY when given (it replaces the kept one), else the
#             key made on an earlier start, else a new random one, printed once to the log.
#             Readable by the service's user (uid 10001) and Prometheus's group (nobody, 65534),
#             which scrapes /metrics with it; nobody else.
#   TLS       $TLS_DIR/cert.pem + key.pem: used as they are when both exist (a mounted
#             certificate), else a self-signed one for IMAGEGEN_TLS_NAME (default localhost).
#
# The directories are arguments so the suite can run this on the host (tests/deploy).
set -eu

KEY_DIR=${1:-/run/imagegen}
TLS_DIR=${2:-/etc/nginx/tls}
SERVICE_UID=10001   # the imagegen images' user (Dockerfile)
SCRAPER_GID=65534   # nobody: the group Prometheus's image runs as
TLS_NAME=${IMAGEGEN_TLS_NAME:-localhost}
TLS_DAYS=825        # the longest validity clients accept for a server certificate

umask 077
say() { printf 'imagegen first start: %s\n' "$*"; }
fail() { printf 'imagegen first start: %s\n' "$*" >&2; exit 1; }

# Written beside the target and renamed, so a start interrupted half-way never leaves an empty key.
install_key() {
    tmp="$KEY_DIR/.api_key.$$"
    printf '%s' "$1" > "$tmp"
    if [ "$(id -u)" = 0 ]; then
        chown "$SERVICE_UID:$SCRAPER_GID" "$tmp"
    fi
    chmod 0440 "$tmp"
    mv -f "$tmp" "$KEY_DIR/api_key"
}

api_key() {
    mkdir -p "$KEY_DIR"
    chmod 0711 "$KEY_DIR"  # the file's own mode decides who reads it; nobody lists the folder
    if [ -n "${IMAGEGEN_API_KEY:-}" ]; then
        install_key "$IMAGEGEN_API_KEY"
        say "API key: the one given in IMAGEGEN_API_KEY"
    elif [ -s "$KEY_DIR/api_key" ]; then
        say "API key: the one made on first start (volume imagegen-secrets)"
    else
        install_key "$(openssl rand -hex 32)"
        say "API key generated; it is printed this once (it stays in the volume imagegen-secrets):"
        printf '\n    %s\n\n' "$(cat "$KEY_DIR/api_key")"
        say "send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
    fi
}

subject_alt_names() {
    case "$TLS_NAME" in
        localhost | 127.0.0.1) echo "DNS:localhost,IP:127.0.0.1" ;;
        *[!0-9.]*) echo "DNS:$TLS_NAME,DNS:localhost,IP:127.0.0.1" ;;
        *) echo "IP:$TLS_NAME,DNS:localhost,IP:127.0.0.1" ;;
    esac
}

certificate() {
    if [ -s "$TLS_DIR/cert.pem" ] && [ -s "$TLS_DIR/key.pem" ]; then
        say "TLS: $(openssl x509 -in "$TLS_DIR/cert.pem" -noout -subject -enddate | tr '\n' ' ')"
        return
    fi
    mkdir -p "$TLS_DIR" 2>/dev/null || true
    [ -w "$TLS_DIR" ] || fail "TLS: no cert.pem + key.pem in $TLS_DIR and it is read-only: mount both"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$TLS_DAYS" \
        -subj "/CN=$TLS_NAME" -addext "subjectAltName=$(subject_alt_names)" \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null \
        || fail "TLS: openssl could not make a certificate"
    chmod 0600 "$TLS_DIR/key.pem"
    chmod 0644 "$TLS_DIR/cert.pem"
    say "TLS: self-signed certificate made for $TLS_NAME ($(subject_alt_names)), $TLS_DAYS days;"
    say "TLS: clients can pin its $(openssl x509 -in "$TLS_DIR/cert.pem" -noout -fingerprint -sha256)"
}

api_key
certificate
