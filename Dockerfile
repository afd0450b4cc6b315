# One image for every role: `atmp-monitor migrate`, the Celery worker, Celery beat, or `atmp-monitor run`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ATMP_MONITOR_CONFIG=/app/config

WORKDIR /app

# The package (with its dependencies) is installed before templates and config are copied, so editing
# those does not reinstall anything; editing code does.
COPY pyproject.toml README.md ./
COPY monitor ./monitor
COPY workers ./workers
# Editable: the shipped templates/ are found beside the package, as in a source checkout.
RUN pip install -e ".[postgres]"

COPY templates ./templates
COPY config ./config

# An unprivileged user; var/ (embedded broker, locks) and /var/lib/atmp (beat's schedule) are its to write.
RUN useradd --system --create-home --home-dir /home/atmp atmp \
    && mkdir -p /app/var /var/lib/atmp \
    && chown atmp /app/var /var/lib/atmp
USER atmp

CMD ["atmp-monitor", "run"]
