#!/bin/sh
# The password goes into a config file on the container's tmpfs, never onto the command line (where
# `ps` on the host would show it).
set -eu
S=/run/secrets
for f in ca.pem redis.pem redis.key redis_password; do
  [ -r "$S/$f" ] || { echo "redis-entrypoint: cannot read $S/$f" >&2; exit 1; }
done
conf=/tmp/redis.conf
umask 077
cat > "$conf" <<CONF
port 0
tls-port 6379
bind * -::*
protected-mode no
tls-cert-file $S/redis.pem
tls-key-file $S/redis.key
tls-ca-cert-file $S/ca.pem
tls-auth-clients no
tls-protocols "TLSv1.2 TLSv1.3"
requirepass $(cat "$S/redis_password")
dir /data
appendonly yes
save ""
CONF
exec redis-server "$conf"
