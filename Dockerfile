# otel-user-enricher: a small, non-root image.
# Build: docker build -t otel-user-enricher:local .
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
# The runtime lock (exact versions with hashes, as `make` installs) goes in first so
# that the layer is reused when only the code changes; every image of one commit
# holds the same packages.
COPY requirements.txt ./
RUN python -m venv /opt/enricher \
    && /opt/enricher/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.txt
COPY pyproject.toml README.md ./
COPY processor ./processor
RUN /opt/enricher/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11.11-slim-bookworm
# Raise glibc's malloc thresholds before Python starts, as `serve` also does at
# run time (see processor/app/tuning.py); harmless where the call is repeated.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MALLOC_TRIM_THRESHOLD_=268435456 \
    MALLOC_MMAP_THRESHOLD_=67108864 \
    PATH=/opt/enricher/bin:$PATH
COPY --from=build /opt/enricher /opt/enricher
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin enricher \
    && mkdir -p /var/lib/user-enricher/spool \
    && chown -R 10001:10001 /var/lib/user-enricher
USER 10001:10001
EXPOSE 4317 4318 8089
ENTRYPOINT ["user-enricher"]
CMD ["serve", "--config", "/etc/user-enricher/config.yaml"]
