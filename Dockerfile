# sluice container image: docker build -t sluice .
#
# Stage 1 builds the release binary. Dependencies are compiled in their own layer, from only
# Cargo.toml and Cargo.lock with placeholder sources, so that editing src/ rebuilds sluice alone.
# Stage 2 is distroless (glibc, CA certificates, no shell, no package manager), running as the
# image's non-root user (65532). tests/deploy.rs reads this file: it checks the build command and
# runs `sluice check` on the config copied below.

FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependency layer: placeholder main, lib and benches (Cargo.toml names the benches, and cargo
# refuses a manifest whose targets are missing), built with the real lock file.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for bench in $(sed -n '/^\[\[bench\]\]/,/^name/s/^name = "\(.*\)"/\1/p' Cargo.toml); do \
      echo 'fn main() {}' > "benches/$bench.rs"; \
    done \
 && cargo build --release --locked --bin sluice \
 && rm -rf src benches

# sluice itself. The touch makes cargo rebuild over the placeholders whatever the copied mtimes.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin sluice \
 && mkdir -p /out/state \
 && cp target/release/sluice /out/sluice

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sluice /usr/local/bin/sluice
COPY config/docker.toml /etc/sluice/sluice.toml
# server.state_dir in the shipped config: runtime registrations, writable by the non-root user.
COPY --from=builder --chown=65532:65532 /out/state /var/lib/sluice
USER 65532:65532
WORKDIR /var/lib/sluice
ENV SLUICE_CONFIG=/etc/sluice/sluice.toml

# 8080: the proxy listener; 9901: the admin API (loopback-only in the shipped config: publish it
# only after binding it to 0.0.0.0 with a token, see docs/operations.md).
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# No shell or curl in the image: sluice probes its own admin API.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/sluice", "probe", "--timeout", "2s", "http://127.0.0.1:9901/healthz"]

ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["run", "--config", "/etc/sluice/sluice.toml"]
