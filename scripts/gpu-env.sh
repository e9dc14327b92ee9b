#!/usr/bin/env bash
# Sourced on the GPU machine: unpacks the carried .deb files (scripts/fetch-gpu-deps.sh) into
# .deps/prefix and points CMake and pkg-config at them.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -d "$_root/.deps/debs" ]; then
  _prefix="$_root/.deps/prefix"
  if [ ! -f "$_prefix/.unpacked" ]; then
    mkdir -p "$_prefix"
    for f in "$_root"/.deps/debs/*.deb; do dpkg -x "$f" "$_prefix"; done
    touch "$_prefix/.unpacked"
  fi
  export CMAKE_PREFIX_PATH="$_prefix/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PKG_CONFIG_PATH="$_prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$_prefix/usr/share/pkgconfig"
  export PKG_CONFIG_SYSROOT_DIR="$_prefix"
  export LIBRARY_PATH="$_prefix/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$_prefix/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
