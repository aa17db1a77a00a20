#!/bin/sh
# The reference of issue 4: Kamailio's xmpp module (the C implementation
# the gateway replaces), built from the Debian source of the installed
# kamailio package with the one fix that makes it run, for
# bench.endtoend --reference (docs/performance.rst, round 26).
#
# Since 5.2.0 the module reads expat's attribute array as
# "while (*(atts[i]) != '\0')": the array ends with a NULL pointer, which
# this dereferences, so the module crashes on the first stream header
# (kamailio/kamailio#4154). The fix is OpenSIPS's (commit 4c94c946a4,
# 2018): "while (atts[i] != NULL)", in xstream.c and xode_from.c. Nothing
# else is changed. The module is built in the source tree configured as
# Debian configures it (debian/rules: make cfg ... group_include=kstandard)
# so that its compile flags match the installed kamailio's, which checks
# them when it loads a module.
#
# Usage: bench/kamailio-xmpp.sh OUTDIR
#   writes OUTDIR/xmpp.so; needs the kamailio and libexpat1-dev packages,
#   make and gcc; fetches the source with apt-get (a private source list
#   and package lists under OUTDIR, so the system's apt setup is not
#   changed). Runs as root (apt-get).
set -eu
out=${1:?usage: $0 OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
version=$(dpkg-query -W -f='${Version}' kamailio)
upstream=${version%-*}
work="$out/src"
rm -rf "$work"
mkdir -p "$work/lists/partial"
# The release this machine runs (its installed kamailio comes from it).
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
cat > "$work/sources.list" <<EOF
deb-src http://deb.debian.org/debian $codename main
deb-src http://deb.debian.org/debian $codename-updates main
deb-src http://deb.debian.org/debian-security $codename-security main
EOF
apt_opts="-o Dir::Etc::SourceList=$work/sources.list \
  -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists=$work/lists \
  -o Debug::NoDropPrivs=true -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get $apt_opts -q update >/dev/null
# shellcheck disable=SC2086
(cd "$work" && apt-get $apt_opts -q source --download-only "kamailio=$version" >/dev/null)
tar -xzf "$work/kamailio_$upstream.orig.tar.gz" -C "$work"
tree="$work/kamailio-$upstream"
for f in xstream.c xode_from.c; do
  sed -i "s/while (\*(atts\[i\]) != '\\\\0')/while (atts[i] != NULL)/" \
    "$tree/src/modules/xmpp/$f"
  grep -q 'while (atts\[i\] != NULL)' "$tree/src/modules/xmpp/$f" || {
    echo "$0: the fix did not apply to $f (kamailio $version)" >&2; exit 1; }
done
make -C "$tree" -s cfg prefix=/usr cfg_target=/etc/kamailio/ \
  FLAVOUR=kamailio group_include=kstandard >/dev/null
make -C "$tree" -s modules modules=src/modules/xmpp >/dev/null
cp "$tree/src/modules/xmpp/xmpp.so" "$out/xmpp.so"
rm -rf "$work"
echo "$out/xmpp.so: kamailio $version's xmpp module, with the fix"
