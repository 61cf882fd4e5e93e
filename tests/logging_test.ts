import assert from "node:assert/strict";
import { getLogger } from "@logtape/logtape";
import { RateLimiter, resetLogging, setupLogging } from "../src/logging.ts";

function capture(format: "json" | "pretty", secrets: string[] = []): string[] {
  const lines: string[] = [];
  setupLogging({
    level: "debug",
    format,
    secrets,
    write: (line) => lines.push(line),
    isTerminal: false,
  });
  return lines;
}

Deno.test("LOG_FORMAT=json writes one JSON object per line with timestamp, level, category, message and fields", () => {
  const lines = capture("json");
  try {
    getLogger(["gridrelay", "connector"]).info("Connected to {url}", {
      url: "mqtt://b:1883",
      topic: "a/x/u/data",
    });
  } finally {
    resetLogging();
  }
  assert.equal(lines.length, 1);
  assert.ok(lines[0].endsWith("\n"));
  const entry = JSON.parse(lines[0]);
  assert.equal(entry.level, "info");
  assert.equal(entry.category, "gridrelay.connector");
  assert.equal(entry.message, "Connected to mqtt://b:1883");
  assert.equal(entry.url, "mqtt://b:1883");
  assert.equal(entry.topic, "a/x/u/data");
  assert.ok(!Number.isNaN(Date.parse(entry.timestamp)));
});

Deno.test("secrets never reach a log line, in either format", () => {
  for (const format of ["json", "pretty"] as const) {
    const lines = capture(format, ["hunter2-secret"]);
    try {
      const log = getLogger(["gridrelay", "test"]);
      log.error("Connecting with password {password}", { password: "hunter2-secret" });
      log.warn("Error: {error}", { error: new Error("auth failed for hunter2-secret") });
    } finally {
      resetLogging();
    }
    assert.equal(lines.length, 2);
    for (const line of lines) {
      assert.doesNotMatch(line, /hunter2-secret/);
      assert.match(line, /\*\*\*/);
    }
  }
});

Deno.test("levels below LOG_LEVEL are not written", () => {
  const lines: string[] = [];
  setupLogging({
    level: "warning",
    format: "json",
    write: (line) => lines.push(line),
    isTerminal: false,
  });
  try {
    getLogger(["gridrelay"]).info("quiet");
    getLogger(["gridrelay"]).warn("loud");
  } finally {
    resetLogging();
  }
  assert.equal(lines.length, 1);
  assert.match(lines[0], /loud/);
});

Deno.test("the rate limiter lets one event per key per window through and counts the rest", () => {
  let now = 0;
  const limiter = new RateLimiter(60_000, { now: () => now });
  assert.deepEqual(limiter.check("a/x|calc"), { allowed: true, suppressed: 0 });
  assert.equal(limiter.check("a/x|calc").allowed, false);
  assert.equal(limiter.check("a/x|calc").allowed, false);
  assert.equal(limiter.check("a/y|calc").allowed, true, "another key has its own window");
  now = 60_000;
  assert.deepEqual(limiter.check("a/x|calc"), { allowed: true, suppressed: 2 });
});

Deno.test("the rate limiter forgets the oldest keys beyond its bound", () => {
  const limiter = new RateLimiter(60_000, { now: () => 0, maxKeys: 2 });
  limiter.check("one");
  limiter.check("two");
  limiter.check("three");
  assert.equal(limiter.check("one").allowed, true, "one was forgotten, so it is new again");
});
