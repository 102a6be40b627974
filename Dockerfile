# One image for api, worker and migrate; settings come from DOVECOTE_* environment variables.
#   docker build -t dovecote .
#   docker compose up            (see docker-compose.yml)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that editing the code does not reinstall
# torch. With no app/, worker/ or dovecote/ here yet, `pip install .[s3]` installs every dependency (boto3
# for s3:// blob storage included) and the `dovecote` entry point but no package of ours.
COPY pyproject.toml README.md ./
RUN pip install ".[s3]"

COPY alembic.ini ./
COPY migrations/ migrations/
COPY app/ app/
COPY worker/ worker/
COPY dovecote/ dovecote/

# The code runs from /app, not from site-packages: app/cli.py finds Alembic's environment at
# <app package>/../migrations, which only exists next to the source tree.
ENV PYTHONPATH=/app \
    DOVECOTE_DATA_DIR=/data

# Non-root. /data is created here, owned by that user, so that a fresh named volume mounted on
# it inherits the ownership.
RUN useradd --create-home --uid 10001 --user-group dovecote \
    && mkdir -p /data \
    && chown dovecote:dovecote /data
USER dovecote
VOLUME ["/data"]

EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request, sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# The API alone; `dovecote worker` and `dovecote migrate` are the other two roles.
CMD ["dovecote", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
