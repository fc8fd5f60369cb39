#!/bin/sh
set -eu
export URL=https://deb.debian.org/debian/dists/bookworm/Release?x=1
for f in /etc/hosts /usr/share/dict/words; do wc -l "$f" | sort -n; done
if curl -fsS "$URL" >/dev/null; then echo ok; fi   # a comment with /not/a/path
CONF=/etc/ssl/openssl.cnf redis-cli -h cache.internal -p 6379 ping; nc -z localhost:5432 && (cd /tmp && make -j2)
case "$1" in a) `which python3` -c 'print(1)' ;; esac
