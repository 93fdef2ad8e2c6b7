# Build: one static-ish binary linked against libpq and OpenSSL.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev libssl-dev pkg-config && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin orderflow

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 libssl3 ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/orderflow /usr/local/bin/orderflow
USER nobody
ENTRYPOINT ["orderflow"]
CMD ["serve"]
