# fedistream in a container. Untested in CI (no Docker engine there); see
# docker-compose.yml. Build: docker build -t fedistream .
FROM rust:1.89-bookworm AS build
WORKDIR /src
# librdkafka is built from source by rdkafka-sys (its own configure script).
RUN apt-get update && apt-get install -y --no-install-recommends build-essential perl python3 && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cargo build --release --bin fedistream && cp target/release/fedistream /fedistream

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/fedistream --create-home fedistream
COPY --from=build /fedistream /usr/local/bin/fedistream
COPY schemas /usr/share/fedistream/schemas
USER fedistream
WORKDIR /var/lib/fedistream
ENTRYPOINT ["fedistream"]
CMD ["--help"]
