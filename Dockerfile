# syntax=docker/dockerfile:1
FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim-bookworm
LABEL org.opencontainers.image.title="reflexdb-exporter" \
      org.opencontainers.image.description="Prometheus exporter for ReflexDB Cloud"
COPY --from=build /install /usr/local
# A fixed numeric UID lets Kubernetes' runAsNonRoot verify the user without a passwd lookup.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin reflexdb
USER 10001
EXPOSE 10510
HEALTHCHECK --interval=30s --timeout=5s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10510/-/healthy', timeout=3)"]
ENTRYPOINT ["reflexdb-exporter"]
CMD ["--config.file=/etc/reflexdb/config.yaml"]
