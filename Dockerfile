# Herald's container image: the one static binary in an empty (scratch)
# image, with CA certificates for the push vendors' TLS, running as a
# non-root user, its data in the /data volume, healthy while /readyz
# answers 200 (herald healthcheck: the image has no shell and no curl).
#
# From a checkout, with BuildKit (Docker's builder since 23.0; before it,
# DOCKER_BUILDKIT=1):
#   docker build -t herald --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run -d --name herald -p 127.0.0.1:7400:7400 -v herald-data:/data \
#     --env-file /etc/herald/herald.env herald
# docs/deploy.md has the rest (TLS, push credentials, systemd).
#
# BINARY picks where the binary comes from: "build" (the default) compiles
# it in the Go image below; "prebuilt" takes a linux binary built outside
# (a release's, or CI's, which cannot pull the Go image) from the build
# context, which then holds: herald, ca-certificates.crt, and an empty
# folder named empty. BuildKit builds only the stage BINARY names.
ARG GO_VERSION=1.26
ARG BINARY=build

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=""
ARG REVISION=""
ARG TARGETOS
ARG TARGETARCH
# CGO off: every store engine is pure Go (modernc SQLite, Pebble), so the
# binary runs in an image with no libc.
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/herald-im/herald/internal/version.version=${VERSION} -X github.com/herald-im/herald/internal/version.revision=${REVISION}" \
      -o /out/herald ./cmd/herald \
 && mkdir -p /out/etc/ssl/certs /out/data /out/tmp \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/

FROM scratch AS prebuilt
COPY herald /out/herald
COPY ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt
COPY empty/ /out/data/
COPY empty/ /out/tmp/

FROM ${BINARY} AS binary

FROM scratch
COPY --from=binary /out/etc/ /etc/
# Owned by the user the server runs as: a named volume mounted at /data
# takes this folder's owner the first time.
COPY --from=binary --chown=65532:65532 /out/data /data
COPY --from=binary --chown=65532:65532 /out/tmp /tmp
COPY --from=binary /out/herald /herald
USER 65532:65532
WORKDIR /data
ENV HERALD_ADDR=0.0.0.0:7400 \
    HERALD_DATA=/data \
    TMPDIR=/tmp
VOLUME ["/data"]
EXPOSE 7400
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/herald", "healthcheck", "--timeout", "4s"]
ENTRYPOINT ["/herald"]
CMD ["serve"]
