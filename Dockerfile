# ocs: Diameter Gy/Ro online charging node.
#   docker build -t ocs .
#   docker run --rm -p 3868:3868 -p 9464:9464 -v ocs-data:/var/lib/ocs ocs
#   docker run --rm -v ocs-data:/var/lib/ocs ocs accounts --store /var/lib/ocs/ocs.lmdb load FILE
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/ocs ocs
WORKDIR /opt/ocs
COPY pyproject.toml README.md ./
COPY ocs ./ocs
COPY dictionaries ./dictionaries
COPY ocs.example.toml /etc/ocs/ocs.toml
RUN pip install --no-cache-dir . && ocs dict check

USER ocs
# the LMDB cache (balances, sessions, rated-event outbox) lives on this volume
VOLUME ["/var/lib/ocs"]
# Diameter (one worker process per CPU core shares it), Prometheus /metrics
EXPOSE 3868/tcp 9464/tcp
# healthy while a serving process has written its heartbeat into the store in the last 5 s
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["ocs", "check", "--store", "/var/lib/ocs/ocs.lmdb"]
ENTRYPOINT ["ocs"]
CMD ["serve", "--config", "/etc/ocs/ocs.toml", "--store", "/var/lib/ocs/ocs.lmdb", \
     "--metrics", "0.0.0.0:9464"]
