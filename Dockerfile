# Worker image for docker-compose.yml: the ivt package and its locked dependencies.
FROM python:3.11-slim
WORKDIR /opt/ivt
COPY requirements.lock pyproject.toml README.md ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY app ./app
COPY agents ./agents
COPY models ./models
COPY schemas ./schemas
RUN pip install --no-cache-dir --no-deps .
ENV IVT_DATA_DIR=/var/lib/ivt
VOLUME /var/lib/ivt
ENTRYPOINT ["ivt"]
CMD ["worker"]
