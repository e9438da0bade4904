#!/usr/bin/env bash
# Install the built app folder for one user or system-wide: copies it to PREFIX/lib/desktop-dpo, links
# PREFIX/bin/desktop-dpo, and puts the launcher, AppStream metadata and icon under PREFIX/share.
#
#   ./install.sh ~/.local      (this user; the default)      sudo ./install.sh /usr/local
#
# Run from the app folder (dist/desktop-dpo/install.sh) or as packaging/install.sh after a build.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -x "$here/desktop-dpo" ]; then bundle="$here"; else bundle="$(cd "$here/.." && pwd)/dist/desktop-dpo"; fi
[ -x "$bundle/desktop-dpo" ] || { echo "no built app at $bundle: run packaging/build.sh first" >&2; exit 1; }
mkdir -p "${1:-$HOME/.local}"
prefix="$(cd "${1:-$HOME/.local}" && pwd)"  # absolute: it goes into a link and the launcher
mkdir -p "$prefix/lib" "$prefix/bin" "$prefix/share"
rm -rf "$prefix/lib/desktop-dpo"
cp -a "$bundle" "$prefix/lib/desktop-dpo"
ln -sfn "$prefix/lib/desktop-dpo/desktop-dpo" "$prefix/bin/desktop-dpo"
cp -a "$bundle/share/." "$prefix/share/"
# Menus do not always search PREFIX/bin (~/.local/bin often is not on their PATH): name the program in full.
sed -i "s|^Exec=desktop-dpo|Exec=$prefix/bin/desktop-dpo|" "$prefix/share/applications/io.github.desktop_dpo.desktop"
# Let the menus see the new launcher and icon now rather than at the next login (both tools are optional).
command -v update-desktop-database >/dev/null && update-desktop-database -q "$prefix/share/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$prefix/share/icons/hicolor" || true
echo "installed: $prefix/bin/desktop-dpo (make sure $prefix/bin is on PATH)"
