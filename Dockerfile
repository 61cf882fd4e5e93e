# gridrelay worker image. Build: docker build -t gridrelay .
# Run:   docker run --env-file .env -v gridrelay-data:/data gridrelay
FROM denoland/deno:2.9.6

WORKDIR /app

# Dependencies first, so they are cached in their own layer.
COPY deno.json deno.lock ./
COPY mod.ts ./
COPY src/ ./src/
COPY sinks/ ./sinks/
RUN deno install --frozen --entrypoint mod.ts

ENV DATA_DIR=/data \
    FILE_PATH=/data/readings.jsonl \
    LOG_FORMAT=json
RUN mkdir -p /data && chown deno:deno /data
VOLUME ["/data"]
USER deno

# exec form: SIGTERM reaches the worker directly, with no shell in between.
ENTRYPOINT ["deno", "run", "--cached-only", "--allow-net", "--allow-env", "--allow-read", "--allow-write=/data", "--allow-sys=hostname,osRelease", "mod.ts"]
