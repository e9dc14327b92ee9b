#!/usr/bin/env bash
# Packs a llama.cpp CUDA build made on the development machine (the CUDA toolkit compiles and links here;
# no GPU needed) for the lent GPU machine, so that its 8-9 minute build does not spend device time:
# llama-bench / llama-quantize / llama-perplexity and their shared libraries, xz-compressed and split in
# three parts under .gpp1/ .. .gpp3/ (each call's transfer is limited to 64 MiB, the repository and the
# packed llamarun binaries included: carry one part per call), and
# llama.cpp's gguf-py (for bench/cuda/make_random_gguf.py) as .gpurun/gguf-py.tar.xz.
# scripts/gpu-quant-bench.sh joins the parts once all have arrived (LCPP_PREBUILT=1).
# The build (about 20 minutes on 2 cores with ccache warm, far longer cold), from the llama.cpp inside the
# llama-cpp-python 0.3.36 sdist:
#   cmake -S SRC -B BUILD -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DGGML_NATIVE=OFF \
#     -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF \
#     -DCMAKE_BUILD_TYPE=Release -DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath-link,DIR
#   cmake --build BUILD --target llama-bench llama-quantize llama-perplexity
# where DIR holds a link libcuda.so.1 -> /usr/local/cuda/lib64/stubs/libcuda.so (the executables link
# against libggml-cuda.so, which needs the driver library this machine lacks).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:?llama.cpp build directory}
SRC=${2:?llama.cpp source directory}
B="$BUILD/bin"
rm -rf .gpp1 .gpp2 .gpp3 && mkdir -p .gpp1 .gpp2 .gpp3 .gpurun
tar -cJf /tmp/lcpp-bin.tar.xz -C "$B" --dereference llama-bench llama-quantize llama-perplexity \
  libllama-bench-impl.so libllama-perplexity-impl.so libllama-quantize-impl.so libllama-common.so.0 \
  libllama.so.0 libggml.so.0 libggml-base.so.0 libggml-cpu.so.0 libggml-cuda.so.0
third=$(($(stat -c %s /tmp/lcpp-bin.tar.xz) / 3 + 1))
split -b "$third" /tmp/lcpp-bin.tar.xz /tmp/lcpp-bin.tar.xz.part-
mv /tmp/lcpp-bin.tar.xz.part-aa .gpp1/ && mv /tmp/lcpp-bin.tar.xz.part-ab .gpp2/ && mv /tmp/lcpp-bin.tar.xz.part-ac .gpp3/
sha256sum /tmp/lcpp-bin.tar.xz | cut -d' ' -f1 >.gpp1/lcpp-bin.sha256
rm -f /tmp/lcpp-bin.tar.xz
tar -cJf .gpurun/gguf-py.tar.xz -C "$SRC" gguf-py
du -sh .gpp1 .gpp2 .gpp3 .gpurun/gguf-py.tar.xz
