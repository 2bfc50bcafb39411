# keygate: multi-stage release build, run as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin keygate

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/keygate --create-home keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
# Paths in a config are relative to its folder: with the config in
# /var/lib/keygate/config, the data directory "../data" is /var/lib/keygate/data, owned by
# the keygate user. Mount your own config there (with listen = "0.0.0.0:8080").
COPY config /var/lib/keygate/config
USER 10001:10001
WORKDIR /var/lib/keygate
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["run", "--config", "/var/lib/keygate/config/keygate.toml"]
