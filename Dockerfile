# The API and worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /srv/sluice
COPY pyproject.toml README.md ./
COPY app ./app
COPY ingest ./ingest
COPY storage ./storage
RUN pip install --no-cache-dir .
ENV SLUICE_HOST=0.0.0.0 SLUICE_PORT=8000
EXPOSE 8000
CMD ["sh", "-c", "python -m app migrate && exec python -m app serve"]
