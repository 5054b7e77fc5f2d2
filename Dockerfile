# stockhook: both binaries in one small image; the compose file (compose.yaml) runs one container
# per process on a shared data volume.
#
#   docker build --build-arg BUILD_GIT_COMMIT=$(git rev-parse --short=12 HEAD) -t stockhook .
#
# Build: the Rust toolchain on Debian 12, `--profile dist` (no debug info, thin LTO), cached
# registry and target dirs. Run: distroless cc-debian12 (glibc, CA certificates, no shell, no
# package manager), as the unprivileged `nonroot` user, by number (uid and gid 65532), so a
# runtime that insists on a non-root user (Kubernetes runAsNonRoot) can check it.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# .git is not in the build context (.dockerignore): the commit comes in as a build argument.
ARG BUILD_GIT_COMMIT=unknown
ENV BUILD_GIT_COMMIT=${BUILD_GIT_COMMIT}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p stockhook-receiver -p stockhook-worker \
 && install -D -m 0755 target/dist/stockhook-receiver target/dist/stockhook-worker -t /out/bin/ \
 && install -d -m 0700 -o 65532 -g 65532 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
# The data volume's mount point, owned by nonroot so a fresh named volume is writable.
COPY --from=build --chown=65532:65532 /out/data /var/lib/stockhook
COPY deploy/stockhook.toml.example /etc/stockhook/stockhook.toml.example
COPY LICENSE /usr/share/doc/stockhook/LICENSE
USER 65532:65532
ENV STOCKHOOK_DATA_DIR=/var/lib/stockhook \
    STOCKHOOK_RECEIVER_LISTEN=0.0.0.0:8080
VOLUME ["/var/lib/stockhook"]
EXPOSE 8080 9464 9465
# The receiver by default; the worker: `stockhook-worker --config ... run` (see compose.yaml).
ENTRYPOINT []
CMD ["/usr/local/bin/stockhook-receiver", "--config", "/etc/stockhook/stockhook.toml", "serve"]
