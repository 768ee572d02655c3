#!/usr/bin/env bash
# Builds the Debian packages into target/debian/:
#   postgresql-15-apikey_<version>_<arch>.deb  apikey.so, apikey.control, and every install and
#                                              upgrade script (sql/apikey--*.sql)
#   apikey-shim_<version>_<arch>.deb           /usr/bin/apikey-shim, its systemd unit, and the
#                                              documented environment file
#                                              /etc/apikey-shim/apikey-shim.env (a conffile)
# The extension's files come from `cargo pgrx package` (laid out as installed); the packages
# are assembled with dpkg-deb, which every Debian machine has (cargo-deb would be one more
# tool to install for what a control file and a directory tree do). The maintainer scripts,
# unit and environment file are in packaging/.
#
# Env: APIKEY_SKIP_BUILD=1   package what is already built (no install-deps, no cargo build)
set -euo pipefail
# The files written below get the modes Debian expects whatever the caller's umask.
umask 022

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root="$APIKEY_REPO_ROOT"
out="$APIKEY_TARGET_DIR/debian"
stage="$out/stage"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/extension/Cargo.toml" | head -n 1)"
shim_version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/shim/Cargo.toml" | head -n 1)"
[[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the extension's version (got '$version')"
[ "$version" = "$shim_version" ] || die "extension $version and shim $shim_version must be released together"
arch="$(dpkg --print-architecture)"
maintainer="apikey developers <apikey-maintainers@lists.invalid>"
pg_major=15

if [ "${APIKEY_SKIP_BUILD:-0}" != 1 ]; then
  bash "$root/scripts/install-deps.sh"
  log "cargo pgrx package (the extension as installed, under target/release/apikey-pg$pg_major)"
  (cd "$root/extension" && cargo pgrx package --pg-config "$PGBIN/pg_config")
  log "cargo build --release -p apikey-shim"
  (cd "$root" && cargo build --release -p apikey-shim)
fi
pgrx_tree="$APIKEY_TARGET_DIR/release/apikey-pg$pg_major"
[ -f "$pgrx_tree$("$PGBIN/pg_config" --pkglibdir)/apikey.so" ] \
  || die "$pgrx_tree holds no apikey.so: run without APIKEY_SKIP_BUILD=1"

rm -rf "$stage"
mkdir -p "$stage" "$out"

# doc_dir PACKAGE: copyright, changelog and the README, as Debian policy asks of every package.
doc_dir() {
  local package="$1" dir="$stage/$1/usr/share/doc/$1"
  install -d -m 0755 "$dir"
  cat >"$dir/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: apikey
Source: the apikey repository

Files: *
Copyright: 2026 the apikey developers
License: other
 Distributed by the apikey developers with their source repository; see its README.
EOF
  printf '%s (%s) stable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$package" "$version" "$version" "$maintainer" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n >"$dir/changelog.gz"
  install -m 0644 "$root/README.md" "$dir/README.md"
}

# control PACKAGE DEPENDS DESCRIPTION...: DEBIAN/control with the installed size.
control() {
  local package="$1" depends="$2" summary="$3" body="$4" size
  size="$(du -sk --exclude=DEBIAN "$stage/$package" | cut -f1)"
  install -d -m 0755 "$stage/$package/DEBIAN"
  cat >"$stage/$package/DEBIAN/control" <<EOF
Package: $package
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Section: database
Priority: optional
Homepage: https://www.postgresql.org/
Description: $summary
$body
EOF
}

log "postgresql-$pg_major-apikey $version"
ext="$stage/postgresql-$pg_major-apikey"
mkdir -p "$ext"
cp -a "$pgrx_tree/." "$ext/"
extdir="$ext$("$PGBIN/pg_config" --sharedir)/extension"
install_frozen_releases "$extdir"
find "$ext" -type d -exec chmod 0755 {} +
find "$ext" -type f -exec chmod 0644 {} +
strip --strip-unneeded "$ext$("$PGBIN/pg_config" --pkglibdir)/apikey.so"
doc_dir "postgresql-$pg_major-apikey"
install -d -m 0755 "$ext/DEBIAN"
install -m 0755 "$root/packaging/postgresql-$pg_major-apikey/postrm" "$ext/DEBIAN/postrm"
control "postgresql-$pg_major-apikey" "postgresql-$pg_major, libc6 (>= 2.34), libgcc-s1" \
  "API keys that live inside PostgreSQL $pg_major" \
  " The apikey extension (CREATE EXTENSION apikey): partners, keys, usage and an
 audit log, with peppered Argon2id hashing, verification, scopes, rate limits,
 expiry, rotation and revocation inside the database, behind row-level security.
 Add it to shared_preload_libraries and set apikey.pepper_file; see the README."
dpkg-deb --root-owner-group -Zxz --build "$ext" "$out/postgresql-${pg_major}-apikey_${version}_${arch}.deb" >/dev/null

log "apikey-shim $version"
shim="$stage/apikey-shim"
install -d -m 0755 "$shim/usr/bin" "$shim/lib/systemd/system" "$shim/etc/apikey-shim"
install -m 0755 "$APIKEY_TARGET_DIR/release/apikey-shim" "$shim/usr/bin/apikey-shim"
strip --strip-unneeded "$shim/usr/bin/apikey-shim"
install -m 0644 "$root/packaging/apikey-shim/apikey-shim.service" "$shim/lib/systemd/system/"
install -m 0644 "$root/packaging/apikey-shim/apikey-shim.env" "$shim/etc/apikey-shim/"
doc_dir apikey-shim
install -d -m 0755 "$shim/DEBIAN"
for script in postinst prerm postrm; do
  install -m 0755 "$root/packaging/apikey-shim/$script" "$shim/DEBIAN/$script"
done
echo /etc/apikey-shim/apikey-shim.env >"$shim/DEBIAN/conffiles"
control apikey-shim "adduser, libc6 (>= 2.34), libgcc-s1" \
  "HTTP shim of the apikey PostgreSQL extension" \
  " apikey-shim verifies API keys over HTTP for partners and gateways (nginx
 auth_request, Traefik ForwardAuth, Envoy ext_authz, Caddy forward_auth),
 offers a JSON management API and a key console, and runs as the apikey_shim
 user under systemd, configured by /etc/apikey-shim/apikey-shim.env."
dpkg-deb --root-owner-group -Zxz --build "$shim" "$out/apikey-shim_${version}_${arch}.deb" >/dev/null

rm -rf "$stage"
for deb in "$out"/*_"${version}"_"$arch".deb; do
  printf '%s  %s bytes\n' "$deb" "$(stat -c %s "$deb")"
done
