#!/usr/bin/env bash
# Run on the development machine (Debian 12, apt works): downloads the .deb files of the build
# dependencies that the GPU machine lacks (it has nvcc, CMake, ninja, no Debian -dev packages and
# no network) into .deps/debs. Carry `.deps` to the GPU machine; scripts/gpu-env.sh unpacks them
# there with dpkg -x into .deps/prefix (never into /).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/debs
cd .deps/debs
apt-get download libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 \
  nlohmann-json3-dev libgtest-dev libgmock-dev googletest
ls -1
