#!/bin/sh
# Installs the Debian packages fusemap needs, only those missing. When everything is present it
# is one dpkg-query call and no apt at all (make test runs it every time); on a fresh machine it
# runs apt-get (as root, else it prints the command).
set -eu
PKGS="gcc make pkg-config libjansson-dev libpcre2-dev libutf8proc-dev libopenblas-dev libpng-dev libjpeg-dev libmicrohttpd-dev"
if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps: no dpkg-query (not Debian?): install the equivalents of: $PKGS" >&2
  exit 0
fi
# One line per package that is not fully installed (unknown packages print nothing, hence the
# second check by name below).
installed=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' $PKGS 2>/dev/null | awk '$2 == "ii" {print $1}' || true)
missing=""
for p in $PKGS; do
  case " $(echo $installed) " in *" $p "*) ;; *) missing="$missing $p" ;; esac
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
