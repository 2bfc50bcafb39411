# keygate: multi-stage release build, run as a non-root user.
# Linted by hadolint in tests/deploy.rs (scripts/test installs it).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
# ca-certificates is left unpinned on purpose: it is the trust store keygate verifies
# upstreams, JWKS URLs and PostgreSQL with, so it must be bookworm's current one; an exact
# version pin would also break the build as soon as a point release replaces it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
# Paths in a config are relative to its folder: with the config in
# /var/lib/keygate/config, the data directory "../data" is /var/lib/keygate/data (in the
# keygate user's home) and the policies "../policies" are /var/lib/keygate/policies. Mount
# your own config there (with listen = "0.0.0.0:8080"); deploy/kubernetes mounts a
# ConfigMap.
COPY config /var/lib/keygate/config
COPY policies /var/lib/keygate/policies
USER 10001:10001
WORKDIR /var/lib/keygate
# Agents, admin API (probes, /metrics), forward proxy.
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["run", "--config", "/var/lib/keygate/config/keygate.toml"]
