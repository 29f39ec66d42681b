# ratls-gateway image: the control plane + Envoy. Triton runs in its own (NGC) container that
# shares this container's network namespace, so it listens on loopback only.
# Build: docker build -t ratls-gateway .
ARG ENVOY_IMAGE=envoyproxy/envoy:v1.40.0
FROM ${ENVOY_IMAGE} AS envoy

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ratls ratls
COPY gateway gateway
COPY filters filters
COPY triton_backend triton_backend
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim-bookworm
# util-linux: setpriv (children die with the gateway); ca-certificates: AMD KDS / Intel PCS when online;
# tpm2-tools: evidence on Azure confidential VMs (vTPM)
RUN apt-get update \
 && apt-get install -y --no-install-recommends util-linux ca-certificates tpm2-tools \
 && rm -rf /var/lib/apt/lists/*
COPY --from=envoy /usr/local/bin/envoy /usr/local/bin/envoy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/ratls_gateway-*.whl)[server]" && rm -rf /wheels
COPY config/gateway.yaml /etc/ratls/gateway.yaml
RUN useradd --system --uid 10001 --home-dir /var/lib/ratls --create-home ratls
USER 10001:10001
# Read-only root filesystem: everything written at run time goes to these two mounts.
ENV RATLS_GATEWAY__CONTROL__RUN_DIR=/run/ratls \
    RATLS_SIM_DIR=/var/lib/ratls/sim \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/var/lib/ratls"]
EXPOSE 8443
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["ratls", "serve", "-c", "/etc/ratls/gateway.yaml"]
