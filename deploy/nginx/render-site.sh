#!/bin/sh
# Writes deploy/nginx.conf for nginx in a container (deploy/docker-compose.yml): the very file the
# tests run, with only its "# site:" lines set, as the tests set them
# (livedash.testing.servers.render_nginx_config). Any other "site:" line is refused, so a site
# line added to nginx.conf is not silently left with a machine's paths.
#
#   render-site.sh TEMPLATE OUTPUT
#
#   NGINX_UPSTREAMS   the instances, host:port separated by spaces (required)
#   NGINX_LISTEN      what the server listens on (default 8080)
#   NGINX_STATE_DIR   the pid file and temporary files (default /var/cache/nginx)
#   NGINX_ERROR_LOG   the error log (default stderr, the container's log)
#   NGINX_TLS_CERT, NGINX_TLS_KEY
#                     PEM files: TLS on the listen address (both or neither)
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 TEMPLATE OUTPUT" >&2
  exit 2
fi
template=$1
output=$2
: "${NGINX_UPSTREAMS:?set NGINX_UPSTREAMS to the instances, e.g. \"livedash-1:8000 livedash-2:8000\"}"
cert=${NGINX_TLS_CERT:-}
key=${NGINX_TLS_KEY:-}
if { [ -n "$cert" ] && [ -z "$key" ]; } || { [ -z "$cert" ] && [ -n "$key" ]; }; then
  echo "$0: set both NGINX_TLS_CERT and NGINX_TLS_KEY, or neither" >&2
  exit 2
fi
trap 'rm -f "$output.tmp"' EXIT

awk -v upstreams="$NGINX_UPSTREAMS" -v listen="${NGINX_LISTEN:-8080}" \
    -v dir="${NGINX_STATE_DIR:-/var/cache/nginx}" -v error_log="${NGINX_ERROR_LOG:-stderr}" \
    -v cert="$cert" -v key="$key" '
!/# site:/ { print; next }
{
  match($0, /^[ \t]*/)
  indent = substr($0, 1, RLENGTH)
  setting = $1
  if (setting == "pid") {
    print indent "pid " dir "/nginx.pid;"
  } else if (setting == "error_log") {
    print indent "error_log " error_log " warn;"
  } else if (setting == "client_body_temp_path") {
    print indent "client_body_temp_path " dir "/body;"
  } else if (setting == "proxy_temp_path") {
    print indent "proxy_temp_path " dir "/proxy;"
  } else if (setting == "listen") {
    if (cert == "") {
      print indent "listen " listen ";"
    } else {
      print indent "listen " listen " ssl;"
      print indent "ssl_certificate " cert ";"
      print indent "ssl_certificate_key " key ";"
    }
  } else if (setting == "server") {
    if (!upstream_written) {
      upstream_written = 1
      options = $0  # what follows the address, e.g. "max_fails=0;"
      sub(/[ \t]*#.*$/, "", options)
      sub(/^[ \t]*server[ \t]+[^ \t]+[ \t]*/, "", options)
      count = split(upstreams, instances, " ")
      for (i = 1; i <= count; i++) print indent "server " instances[i] " " options
    }
  } else {
    print "unknown site line in nginx.conf: " $0 > "/dev/stderr"
    exit 1
  }
}
' "$template" > "$output.tmp"
mv "$output.tmp" "$output"
