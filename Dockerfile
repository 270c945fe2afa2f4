# syntax=docker/dockerfile:1
# Backroom: one image for the six services, the migrations, the operator's CLI and the SMTP sink.
#
#   docker build -t backroom:local .
#   docker run --rm backroom:local --help              # the `backroom` command
#   docker run --rm backroom:local serve orders        # one service (see docker-compose.yml)
#
# Every setting is an environment variable BACKROOM_<FIELD> (libs/kit/settings.py and
# services/<svc>/settings.py); docker-compose.yml and deploy/k8s/ set the ones that differ from
# a developer's machine.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: resolve the locked dependencies into /app/.venv with uv --------------------------
FROM ${PYTHON_IMAGE} AS build

# Same uv as the Makefile (UV_VERSION), so the lock is read the same way everywhere.
RUN pip install --no-cache-dir uv==0.13.9

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself (installed editable: the code stays at /app, where
# libs/kit/migrations.py finds services/<svc>/migrations).
COPY libs ./libs
COPY services ./services
COPY deploy/local/smtp_sink.py ./deploy/local/smtp_sink.py
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
    && /app/.venv/bin/python -m compileall -q libs services deploy

# --- runtime: the venv and the code, nothing else, run by an unprivileged user ----------------
FROM ${PYTHON_IMAGE} AS runtime

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 backroom \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin backroom \
    && install -d -o 10001 -g 10001 /var/mail/backroom

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BACKROOM_HTTP_HOST=0.0.0.0

WORKDIR /app
# Owned by root and read-only for the service user: the code cannot be changed at run time
# (its bytecode was compiled in the build stage, hence PYTHONDONTWRITEBYTECODE).
COPY --from=build /app /app

USER 10001:10001
EXPOSE 8101 8102 8103 8104 8105 8106

ENTRYPOINT ["/app/.venv/bin/backroom"]
CMD ["serve", "catalog"]
