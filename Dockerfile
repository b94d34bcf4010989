# ocs: Diameter Gy/Ro online charging node.
#   docker build -t ocs .
#   docker run --rm -p 3868:3868 -v ocs-data:/var/lib/ocs ocs
FROM python:3.11-slim

RUN useradd --system --create-home --home-dir /var/lib/ocs ocs
WORKDIR /opt/ocs
COPY pyproject.toml README.md ./
COPY ocs ./ocs
COPY dictionaries ./dictionaries
COPY ocs.example.toml /etc/ocs/ocs.toml
RUN pip install --no-cache-dir . && ocs dict check

USER ocs
# LMDB cache and other state live on this volume (used from the charging-engine release on)
VOLUME ["/var/lib/ocs"]
EXPOSE 3868/tcp
ENTRYPOINT ["ocs"]
CMD ["serve", "--config", "/etc/ocs/ocs.toml"]
