#!/usr/bin/env bash
# Build the standalone app folder dist/desktop-dpo/ with PyInstaller (see packaging/README.md).
#
#   bash packaging/build.sh            build (creates or reuses the build venv)
#
# Settings (environment):
#   DESKTOP_DPO_BUILD_VENV  the build venv (default: /tmp/desktop-dpo-build-venv); kept apart from .venv so
#                           a build never changes the project's test environment
#   DESKTOP_DPO_DEMO=0      leave the demo model package (~250 MB) out of the bundle
#   PYTHON                  the interpreter that creates the venv (default: python3.11, else python3)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="${DESKTOP_DPO_BUILD_VENV:-/tmp/desktop-dpo-build-venv}"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
start=$(date +%s)

if [ ! -x "$venv/bin/python" ]; then
  echo "+ creating the build venv $venv"
  "$python" -m venv "$venv"
fi
# torch: the pyproject range picks the CPU build where one is on disk; llama-cpp-python compiles the first
# time (minutes) and comes from pip's wheel cache afterwards. Non-editable, so the venv holds no link to
# this checkout (the spec reads desktop_dpo from the checkout itself).
extras=""
if [ "${DESKTOP_DPO_DEMO:-1}" != "0" ]; then extras="[demo]"; fi
echo "+ installing desktop-dpo$extras and PyInstaller into the build venv"
"$venv/bin/python" -m pip install -q "$root$extras" "pyinstaller>=6.10,<7"
installed=$(date +%s)

echo "+ pyinstaller packaging/desktop-dpo.spec"
"$venv/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
  --distpath "$root/dist" --workpath "$root/build/pyinstaller" packaging/desktop-dpo.spec
bundle="$root/dist/desktop-dpo"

# Desktop integration files, laid out as under a prefix (share/...), for packaging/install.sh.
install -D -m 644 resources/io.github.desktop_dpo.desktop "$bundle/share/applications/io.github.desktop_dpo.desktop"
install -D -m 644 resources/io.github.desktop_dpo.metainfo.xml "$bundle/share/metainfo/io.github.desktop_dpo.metainfo.xml"
install -D -m 644 resources/desktop-dpo.svg "$bundle/share/icons/hicolor/scalable/apps/io.github.desktop_dpo.svg"
install -m 755 packaging/install.sh "$bundle/install.sh"
end=$(date +%s)

echo "bundle: $bundle ($(du -sh "$bundle" | cut -f1))"
echo "start it: $bundle/desktop-dpo   install it for this user: $bundle/install.sh ~/.local"
echo "build time: $((end - start)) s (install $((installed - start)) s, PyInstaller $((end - installed)) s)"
