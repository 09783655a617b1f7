#!/usr/bin/env bash
# Build (or run) Caddy with this checkout as the caddy-webhooks plugin,
# the way Caddy users build plugins: through xcaddy at the pinned versions.
#
#   ./xcaddy.sh build [output]     default output: <repo>/bin/caddy-xcaddy
#   ./xcaddy.sh run [caddy args]   builds <repo>/bin/caddy-xcaddy, then runs
#                                  `caddy run [caddy args]`, e.g.
#                                  ./xcaddy.sh run --config Caddyfile.example
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)

XCADDY="github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5"
CADDY_VERSION="v2.11.9"
MODULE="github.com/caddy-webhooks/caddy-webhooks"
# An explicit (zero) version for the local replacement, so `go get` does
# not ask the module proxy for a module that is only on this disk.
PSEUDO="v0.0.0-00010101000000-000000000000"

usage() {
	echo "usage: $0 build [output] | run [caddy args...]" >&2
	exit 2
}

# build OUT: paths given by the user are relative to their working directory.
build() {
	local out
	out=$(realpath -m "$1")
	mkdir -p "$(dirname "$out")"
	(cd "$root" && go run "$XCADDY" build "$CADDY_VERSION" --with "$MODULE@$PSEUDO=." --output "$out")
}

[ $# -ge 1 ] || usage
cmd=$1
shift
case "$cmd" in
build)
	build "${1:-$root/bin/caddy-xcaddy}"
	;;
run)
	build "$root/bin/caddy-xcaddy"
	exec "$root/bin/caddy-xcaddy" run "$@"
	;;
*)
	usage
	;;
esac
