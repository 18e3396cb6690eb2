# syntax=docker/dockerfile:1
#
# imagegen inference images. Targets:
#   cpu  python:3.12-slim + onnxruntime            docker build --target cpu -t imagegen:cpu .
#   gpu  CUDA 13 + cuDNN runtime + onnxruntime-gpu docker build -t imagegen:gpu .   (default, last)
#
# Both serve the models in models/ with `imagegen serve` on port 8000 as a non-root user.
# Neither carries torch or a compiler: the project is built into a wheel in `builder`, and the
# serving stages install that wheel without its dependencies plus the pinned serving closure
# (deploy/requirements-serve.txt) and their own ONNX Runtime build.

ARG ORT_CPU_VERSION=1.32.0
# 1.31.1 is the onnxruntime-gpu release built for CUDA 13 (it ran on an H100 with CUDA 13 here).
ARG ORT_GPU_VERSION=1.31.1

# ---- builder: the project wheel (pure Python; no compiler needed) ---------------------------
FROM python:3.12-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY training/ training/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# ---- cpu: python:3.12-slim + onnxruntime ----------------------------------------------------
FROM python:3.12-slim AS cpu
ARG ORT_CPU_VERSION
# MALLOC_ARENA_MAX=2: glibc's per-thread arenas kept RSS 1.45x warm after a burst of large
# responses, 1.19x with two (bench/memory.py, README "Reliability").
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2 \
    IMAGEGEN_HOST=0.0.0.0 \
    IMAGEGEN_PORT=8000 \
    IMAGEGEN_MODELS_DIR=/app/models
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home imagegen
WORKDIR /app
# The wheel and the lock are bind-mounted, so neither stays in a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,source=deploy/requirements-serve.txt,target=/tmp/requirements-serve.txt \
    pip install --no-cache-dir -r /tmp/requirements-serve.txt "onnxruntime==${ORT_CPU_VERSION}" \
    && pip install --no-cache-dir --no-deps /tmp/wheels/imagegen-*.whl \
    && pip check
COPY --chown=root:root deploy/healthcheck.py /app/healthcheck.py
COPY --chown=root:root models/ /app/models/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
CMD ["imagegen", "serve"]

# ---- gpu (default): CUDA 13 + cuDNN runtime + onnxruntime-gpu -------------------------------
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS gpu
ARG ORT_GPU_VERSION
ARG DEBIAN_FRONTEND=noninteractive
# Ubuntu 24.04's own Python 3.12; the version glob follows security updates of 3.12.3.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12=3.12.3-* \
        python3.12-venv=3.12.3-* \
    && rm -rf /var/lib/apt/lists/*
# A venv, because Ubuntu's system Python refuses pip installs (PEP 668).
RUN python3.12 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MALLOC_ARENA_MAX=2 \
    IMAGEGEN_HOST=0.0.0.0 \
    IMAGEGEN_PORT=8000 \
    IMAGEGEN_MODELS_DIR=/app/models
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home imagegen
WORKDIR /app
# onnxruntime-gpu provides the `onnxruntime` module; the CPU `onnxruntime` distribution must not
# be installed beside it (both own site-packages/onnxruntime/), hence the wheel with --no-deps
# and the final check that no `onnxruntime` distribution is present.
RUN --mount=type=bind,from=builder,source=/wheels,target=/tmp/wheels \
    --mount=type=bind,source=deploy/requirements-serve.txt,target=/tmp/requirements-serve.txt \
    pip install --no-cache-dir -r /tmp/requirements-serve.txt "onnxruntime-gpu==${ORT_GPU_VERSION}" \
    && pip install --no-cache-dir --no-deps /tmp/wheels/imagegen-*.whl \
    && ! pip show --quiet onnxruntime \
    && python -c "import onnxruntime, fastapi, uvicorn, uvloop, httptools, PIL, numpy, prometheus_client, pydantic_settings"
COPY --chown=root:root deploy/healthcheck.py /app/healthcheck.py
COPY --chown=root:root models/ /app/models/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/healthcheck.py"]
CMD ["imagegen", "serve"]
