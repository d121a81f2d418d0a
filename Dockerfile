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
# The feature engine compiled with mypyc (app/features/compiled.py); the compiler only for the build.
ENV IVT_COMPILED_DIR=/opt/ivt/build/mypyc
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && python -m app.features.build_engine \
    && rm -rf build/mypyc/tmp build/app build/__native* build/ops.txt \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV IVT_DATA_DIR=/var/lib/ivt
VOLUME /var/lib/ivt
ENTRYPOINT ["ivt"]
CMD ["worker"]
