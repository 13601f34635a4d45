#!/bin/bash
# Container health check: GET /healthz (or the path in $1) on pgshelf's
# admin port and succeed on status 200. Uses bash's /dev/tcp so that the
# runtime image needs neither curl nor wget.
set -euo pipefail
path=${1:-/healthz}
listen=${PGSHELF_ADMIN_LISTEN:-127.0.0.1:9930}  # pgshelf's default
if [[ $listen == off ]]; then
  echo "healthcheck: the admin port is off (PGSHELF_ADMIN_LISTEN=off)" >&2
  exit 1
fi
port=${listen##*:}
host=${listen%:*}
case $host in
  0.0.0.0 | "") host=127.0.0.1 ;;  # a wildcard address answers on loopback too
  "[::]") host=::1 ;;
  \[*\]) host=${host:1:${#host}-2} ;;
esac
exec 3<>"/dev/tcp/$host/$port"
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$path" >&3
read -r -t 5 _version status _rest <&3
[[ $status == 200 ]]
