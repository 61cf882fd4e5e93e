# gridrelay worker image.
#   Build: docker build -t gridrelay .
#   Run:   docker run --env-file .env -v gridrelay-data:/data -p 9464:9464 gridrelay
# The entrypoint is the launcher (scripts/start.ts): it validates the
# configuration, then runs the worker under exactly the permissions that
# configuration needs (network to the broker and webhook only, files under
# /data only) and passes SIGTERM from `docker stop` straight on.
FROM denoland/deno:2.9.6

WORKDIR /app
RUN mkdir -p /data && chown deno:deno /data

# Build and run as the image's unprivileged user, so the dependency cache is its own.
USER deno

# Dependencies first, in their own layer: rebuilt only when deno.json or deno.lock change.
COPY --chown=deno:deno deno.json deno.lock ./
RUN deno install --frozen

COPY --chown=deno:deno mod.ts ./
COPY --chown=deno:deno src/ ./src/
COPY --chown=deno:deno sinks/ ./sinks/
COPY --chown=deno:deno scripts/start.ts ./scripts/start.ts
RUN deno cache --frozen mod.ts scripts/start.ts

ENV DATA_DIR=/data \
    FILE_PATH=/data/readings.jsonl \
    LOG_FORMAT=json \
    STDOUT_FORMAT=jsonl \
    HTTP_PORT=9464
VOLUME ["/data"]
EXPOSE 9464

# The image has no curl: Deno itself asks /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["deno", "eval", "const r = await fetch(`http://127.0.0.1:${Deno.env.get('HTTP_PORT') ?? 9464}/healthz`); Deno.exit(r.ok ? 0 : 1)"]

# Exec form, no shell: `docker stop`'s SIGTERM reaches the launcher as PID 1,
# which hands it to the worker; the worker drains and exits 0 within
# SHUTDOWN_TIMEOUT_MS (give `docker stop -t` more than that).
ENTRYPOINT ["deno", "run", "--no-prompt", "--allow-read", "--allow-env", "--allow-run=deno", "scripts/start.ts"]
