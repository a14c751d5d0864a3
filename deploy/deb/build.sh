#!/usr/bin/env bash
# Build the Debian package of conndoc: the release binary, the man pages and shell completions
# generated from the CLI definition (so they never drift from --help), then cargo-deb packs
# them with the systemd unit and the example config ([package.metadata.deb] in
# crates/conndoc/Cargo.toml; crates/conndoc/tests/package.rs keeps that list consistent).
#
# Needs cargo-deb, which is not part of CI (it is a download):
#   cargo install cargo-deb --locked --root /tmp/cargo-deb-root      # from crates.io
# Usage: deploy/deb/build.sh            (CARGO_DEB=path/to/cargo-deb to pick another; NO_BUILD=1)
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/../.."
deb=${CARGO_DEB:-$(command -v cargo-deb || echo /tmp/cargo-deb-root/bin/cargo-deb)}
if [ ! -x "$deb" ]; then
  echo "deploy/deb/build.sh: cargo-deb not found; install it: cargo install cargo-deb --locked --root /tmp/cargo-deb-root (or set CARGO_DEB)" >&2
  exit 2
fi
target=${CARGO_TARGET_DIR:-$PWD/target}
# NO_BUILD=1: package the release binary already built (a rebuild is slow on a busy machine).
[ -n "${NO_BUILD:-}" ] || cargo build --release --locked -p conndoc --bin conndoc
bin=$target/release/conndoc
# The generated assets, where the metadata's `target/release/deb-assets/…` paths point.
assets=$target/release/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" man --out "$assets/man"
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/conndoc.bash"
"$bin" completions zsh >"$assets/completions/_conndoc"
"$bin" completions fish >"$assets/completions/conndoc.fish"
mkdir -p "$target/debian"
out=$("$deb" deb -p conndoc --no-build --locked --output "$target/debian/" | tail -1)
echo "$out"
