# syntax=docker/dockerfile:1
#
# clconv images. Targets:
#   cpu (the default, last stage): Intel's CPU OpenCL runtime (x86-64, from PyPI) and Debian's PoCL.
#   gpu: the cpu image plus an ICD entry for NVIDIA's OpenCL driver, which the NVIDIA
#        Container Toolkit mounts into the container at run time.
#
#   docker build -t clconv:cpu .
#   docker build --target gpu -t clconv:gpu .
#
# BASE_IMAGE must be a Debian bookworm image with Python 3.11 and its venv module: the default
# python:3.11-slim-bookworm, or a debootstrap base with python3, python3-venv and python3-pip
# (deploy/build_test.sh builds one). Both stages use the same base, so the virtual environment's
# interpreter link stays valid in the runtime stage.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build

SHELL ["/bin/sh", "-eu", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# On x86-64 every dependency installs from a binary wheel (checked with CPython 3.11), so this
# stage needs no compiler. A dependency without a wheel for the build platform fails here, and
# the compiler it needs belongs in this stage, never in the runtime stages.
RUN python3 -m venv /opt/clconv/venv

WORKDIR /src
# README* matches nothing when the file is absent; pyproject.toml keeps the COPY valid then.
COPY pyproject.toml README* ./
COPY service ./service
COPY kernels ./kernels
# The cache mount keeps downloaded wheels between builds without putting them in a layer. pip
# compiles the bytecode at install time, so the read-only runtime image starts without compiling.
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/clconv/venv/bin/pip install --prefer-binary /src \
    && /opt/clconv/venv/bin/pip uninstall --yes pip setuptools

# Wheels cannot carry symbolic links, so Intel's runtime installs libfoo.so and libfoo.so.N.M as
# two copies (309 MiB of duplicates in intel-opencl-rt 2026.2). Link them instead.
COPY deploy/docker/dedupe_libs.py /tmp/dedupe_libs.py
RUN /opt/clconv/venv/bin/python /tmp/dedupe_libs.py /opt/clconv/venv/lib

COPY deploy/docker/entrypoint.sh deploy/docker/healthcheck.py /opt/clconv/


FROM ${BASE_IMAGE} AS runtime

SHELL ["/bin/sh", "-eu", "-c"]

# Debian's PoCL is the second CPU runtime. libpocl2 depends on clang-15 and binutils because PoCL
# compiles and links kernels with them at run time, so those two are the only compilers here.
# Package versions are left to the base's bookworm point release: pinning them would break the
# build at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install --yes --no-install-recommends \
        pocl-opencl-icd \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# --no-log-init keeps useradd from writing a sparse lastlog entry sized by the high uid.
# /var/cache/clconv is a mount point for a volume that keeps compiled programs across container
# restarts (CLCONV_CACHE_DIR, as docker-compose.yml sets it). Docker gives a new named volume
# the owner and mode of this folder, so uid 10001 can write there.
RUN groupadd --gid 10001 clconv \
    && useradd --no-log-init --uid 10001 --gid clconv --home-dir /home/clconv --create-home \
        --shell /usr/sbin/nologin clconv \
    && install --directory --owner=10001 --group=10001 --mode=0700 /var/cache/clconv

COPY --from=build /opt/clconv /opt/clconv

# CLCONV_HOST and CLCONV_PORT are read by entrypoint.sh and healthcheck.py, not by clconv itself.
# The server binds all interfaces so the container's published port reaches it, and it logs a
# warning for that (clconv has no authentication). By default the process writes only under
# /tmp: the ICD vendors folder that clconv makes at start-up, clconv's program binaries and the
# kernel caches of PyOpenCL (through pytools) and PoCL, which follow XDG_CACHE_HOME. So a
# read-only root needs only /tmp writable, unless CLCONV_CACHE_DIR names another folder.
ENV PATH=/opt/clconv/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLCONV_HOST=0.0.0.0 \
    CLCONV_PORT=8000 \
    CLCONV_LOG_LEVEL=INFO \
    XDG_CACHE_HOME=/tmp/cache

USER 10001:10001
WORKDIR /home/clconv
EXPOSE 8000
# Uvicorn finishes in-flight requests and runs the shutdown hooks on SIGTERM.
STOPSIGNAL SIGTERM
# /healthz answers 200 once device discovery has finished with at least one usable device.
# Discovery builds a probe kernel on every runtime: 1.6 s with empty kernel caches on a 2-core
# x86-64 host (deploy/build_test.sh), where /healthz returned 200 about 4 s after the start.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/clconv/venv/bin/python", "/opt/clconv/healthcheck.py"]
ENTRYPOINT ["/opt/clconv/entrypoint.sh"]
CMD ["serve"]

# Last in the stage because REVISION and CREATED change on every build: earlier, they would
# invalidate the cached layers below them.
ARG VERSION=0.1.0
ARG REVISION=""
ARG CREATED=""
LABEL org.opencontainers.image.title="clconv" \
      org.opencontainers.image.description="OpenCL convolution service behind a REST API, with device-measured timings" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"


FROM runtime AS gpu

# NVIDIA's OpenCL driver lives on the host. With NVIDIA_DRIVER_CAPABILITIES including compute,
# the NVIDIA Container Toolkit mounts libnvidia-opencl.so.1 into the container, and this ICD
# entry lets the OpenCL loader find it. clconv copies /etc/OpenCL/vendors into its own vendors
# folder at start-up and picks a GPU as the default device when one is usable.
COPY deploy/docker/nvidia.icd /etc/OpenCL/vendors/nvidia.icd
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility


FROM runtime AS cpu
