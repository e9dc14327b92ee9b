#!/usr/bin/env bash
# Packs the CUDA build's binaries (llamarun, llamarun_cuda_tests, llamarun_bench_cuda) xz-compressed into
# .cudawork/bz (about 11 MB instead of 70: the fatbins compress well), with .cudawork/unpack.sh, so that they
# fit the lent GPU machine's 64 MiB transfer limit. There: `bash .cudawork/unpack.sh` recreates them under
# .cudawork/b (the build-directory layout gpu-check.sh expects: PREBUILT=1 BUILD_DIR=.cudawork/b).
# .cudawork must be ignored (echo /.cudawork/ >> .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/.."
B="${1:-build-cuda}"
rm -rf .cudawork/bz && mkdir -p .cudawork/bz
for f in llamarun tests/llamarun_cuda_tests bench/cuda/llamarun_bench_cuda; do
  xz -T2 -c "$B/$f" >".cudawork/bz/$(basename "$f").xz"
done
# The commit the binaries were built from (the GPU machine's checkout may carry another HEAD).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src apps bench tests CMakeLists.txt || echo '+uncommitted')" \
  >.cudawork/bz/COMMIT
cat >.cudawork/unpack.sh <<'UNPACK'
set -e
mkdir -p .cudawork/b/tests .cudawork/b/bench/cuda
un() {
  if command -v xz >/dev/null; then xz -dc "$1" >"$2"; else
    python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$1" "$2"; fi
  chmod +x "$2"
}
un .cudawork/bz/llamarun.xz .cudawork/b/llamarun
un .cudawork/bz/llamarun_cuda_tests.xz .cudawork/b/tests/llamarun_cuda_tests
un .cudawork/bz/llamarun_bench_cuda.xz .cudawork/b/bench/cuda/llamarun_bench_cuda
cp .cudawork/bz/COMMIT .cudawork/b/COMMIT
# The tests find their fixtures under the source directory they were built in.
[ -e /work/main ] || { mkdir -p /work && ln -s "$PWD" /work/main; }
UNPACK
du -sh .cudawork/bz
