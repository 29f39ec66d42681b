# A stand-in for NVIDIA's NGC tritonserver image on machines that reach no image registry (CI):
# the tritonserver binary and python backend of the nvidia-pytriton wheel, laid out where the NGC
# image keeps them (/opt/tritonserver, `tritonserver` on PATH) and run as the same unprivileged
# user (triton-server, uid 1000). Built by e2e/compose/images.py; users run the NGC image.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
COPY wheels /wheels
RUN python3 -m venv /opt/tritonserver/python \
 && /opt/tritonserver/python/bin/pip install --no-cache-dir --quiet --no-index --find-links /wheels \
      nvidia-pytriton numpy \
 && rm -rf /wheels
COPY layout.py /layout.py
RUN /opt/tritonserver/python/bin/python /layout.py && rm /layout.py
RUN useradd --uid 1000 --create-home triton-server
# The python backend's stub runs model.py with the first python on PATH: the venv's, with numpy.
ENV PATH=/opt/tritonserver/python/bin:/opt/tritonserver/bin:$PATH
USER 1000:1000
