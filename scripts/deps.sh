#!/bin/sh
# Installs the Debian packages fusemap needs, only those missing. Idempotent and fast
# (one dpkg-query) when everything is present. apt-get when root, else prints the command.
set -eu
PKGS="gcc make pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libopenblas-dev libpng-dev libjpeg-dev"
missing=""
for p in $PKGS; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "deps: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "deps: missing packages:$missing" >&2
  echo "deps: run: sudo apt-get install -y$missing" >&2
  exit 1
fi
