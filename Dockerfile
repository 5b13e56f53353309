# syntax=docker/dockerfile:1
# One image for the four services, the migration/topic job and the demo simulator.
#   docker build -t kommunal-pulse:dev .
#   docker run --rm -e KP_KAFKA_BOOTSTRAP=... -e KP_DATABASE_URL=... kommunal-pulse:dev python -m services.ingest

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build stage: resolve the pinned runtime dependencies into a virtual environment -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml ./
# Only the runtime dependencies (all pinned with == in pyproject.toml); the project itself is copied as source
# below so that `migrations/` stays next to `shared/` (the migration runner finds it relative to the package).
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml','rb'))['project']['dependencies']))" \
        > requirements.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --only-binary=:all: -r requirements.txt \
    && /opt/venv/bin/python -m pip uninstall -y pip setuptools wheel

# --- runtime stage: interpreter, dependencies and source only; no compiler, no pip, non-root ---------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kommunal-pulse" \
      org.opencontainers.image.description="Kommunal-Pulse services: ingest, aggregator, publisher, workflow" \
      org.opencontainers.image.licenses="EUPL-1.2"
RUN python -m pip uninstall -y pip setuptools wheel \
    && groupadd --system --gid 10001 kp \
    && useradd --system --uid 10001 --gid kp --no-create-home --home-dir /app --shell /usr/sbin/nologin kp \
    && mkdir -p /var/lib/kp/eakte && chown -R 10001:10001 /var/lib/kp
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root shared ./shared
COPY --chown=root:root services ./services
COPY --chown=root:root kp ./kp
COPY --chown=root:root migrations ./migrations
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KP_HOST=0.0.0.0 \
    KP_LOG_JSON=true
USER 10001:10001
EXPOSE 8001 8002 8003 8004
# The command picks the service; see docker-compose.yml and deploy/k8s.
CMD ["python", "-m", "services.ingest"]
