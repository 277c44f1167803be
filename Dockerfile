# One multi-stage image for every binary; the compose file and the Kubernetes manifests pick the
# program with `command`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
      --bin ingress --bin sender --bin conversation-sync --bin reminder-scheduler --bin graph-mock --bin wactl \
 && mkdir -p /out \
 && cp target/release/ingress target/release/sender target/release/conversation-sync \
       target/release/reminder-scheduler target/release/graph-mock target/release/wactl /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /nonexistent wa
COPY --from=build /out/ /usr/local/bin/
USER 10001
EXPOSE 8080 8081 8082 8083 8090
CMD ["ingress"]
