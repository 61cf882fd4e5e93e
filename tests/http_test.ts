/**
 * The operator's HTTP endpoints (src/http.ts) on a loopback port, and the
 * Prometheus text exposition (src/metrics.ts) checked by a small parser of
 * the format: HELP and TYPE before every family, valid names, escaped label
 * values, cumulative histogram buckets ending in +Inf that equal _count.
 */

import assert from "node:assert/strict";
import { createWorkerMetrics, Metrics } from "../src/metrics.ts";
import { serveHttp } from "../src/http.ts";

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

interface Family {
  readonly help: string;
  readonly type: string;
  readonly samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /^([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"(?:,|$)/;

/** Parses text exposition format 0.0.4 strictly; throws on anything a Prometheus server would reject. */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const families = new Map<string, Family>();
  let help: { name: string; text: string } | undefined;
  let current: { name: string; family: Family } | undefined;
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ")) {
      const [, name, helpText] = /^# HELP (\S+) (.*)$/.exec(line) ?? [];
      assert.match(name, NAME);
      assert.ok(!families.has(name), `${name} is described once`);
      help = { name, text: helpText.replaceAll("\\n", "\n").replaceAll("\\\\", "\\") };
      continue;
    }
    if (line.startsWith("# TYPE ")) {
      const [, name, type] =
        /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line) ??
          [];
      assert.ok(name, `valid TYPE line: ${line}`);
      assert.equal(help?.name, name, `HELP comes right before TYPE for ${name}`);
      const family = { help: help!.text, type, samples: [] };
      families.set(name, family);
      current = { name, family };
      continue;
    }
    assert.ok(!line.startsWith("#") && line !== "", `unexpected line: ${JSON.stringify(line)}`);
    const match = SAMPLE.exec(line);
    assert.ok(match, `valid sample line: ${line}`);
    const [, name, labelText = "", valueText] = match;
    assert.ok(current, `a sample before any TYPE: ${line}`);
    const suffixes = current.family.type === "histogram" ? ["_bucket", "_sum", "_count"] : [""];
    assert.ok(
      suffixes.some((suffix) => name === current!.name + suffix),
      `${name} belongs to the family ${current.name} above it`,
    );
    assert.match(valueText, /^(-?\d+(\.\d+)?(e[+-]?\d+)?|NaN|\+Inf|-Inf)$/, line);
    current.family.samples.push({ name, labels: parseLabels(labelText), value: number(valueText) });
  }
  for (const [name, family] of families) {
    if (family.type === "histogram") checkHistogram(name, family);
  }
  return families;
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest !== "") {
    const match = LABEL.exec(rest);
    assert.ok(match, `valid labels: {${text}}`);
    labels[match[1]] = match[2].replace(/\\(["\\n])/g, (_, c) => (c === "n" ? "\n" : c));
    rest = rest.slice(match[0].length);
  }
  return labels;
}

function number(text: string): number {
  return text === "+Inf" ? Infinity : text === "-Inf" ? -Infinity : Number(text);
}

function checkHistogram(name: string, family: Family): void {
  const series = new Map<string, Sample[]>();
  for (const sample of family.samples) {
    const { le: _le, ...rest } = sample.labels;
    const key = JSON.stringify(rest);
    series.set(key, [...(series.get(key) ?? []), sample]);
  }
  for (const samples of series.values()) {
    const buckets = samples.filter((sample) => sample.name === `${name}_bucket`);
    const bounds = buckets.map((bucket) => number(bucket.labels.le));
    assert.deepEqual(bounds, [...bounds].sort((a, b) => a - b), "le ascending");
    assert.equal(bounds.at(-1), Infinity, "the last bucket is +Inf");
    for (let i = 1; i < buckets.length; i++) {
      assert.ok(buckets[i].value >= buckets[i - 1].value, "buckets are cumulative");
    }
    const count = samples.find((sample) => sample.name === `${name}_count`);
    assert.ok(samples.some((sample) => sample.name === `${name}_sum`), "has _sum");
    assert.equal(count?.value, buckets.at(-1)!.value, "_count equals the +Inf bucket");
  }
}

Deno.test("every worker metric renders as valid exposition, with SPEC §3's names", () => {
  const metrics = createWorkerMetrics();
  metrics.messagesReceived.add(3);
  metrics.recordsDelivered.add(2, "stdout");
  metrics.rejected.add(1, "invalid_json");
  metrics.spoolPending.set(4, "file");
  metrics.mqttConnected.set(1);
  metrics.residentMemory.set(123_456_789);
  metrics.deliveryLatency.observe(0.003, "stdout");
  metrics.deliveryLatency.observe(0.2, "stdout");
  metrics.deliveryLatency.observe(120, "stdout");
  const families = parseExposition(metrics.registry.render());
  for (
    const name of [
      "gridrelay_messages_received_total",
      "gridrelay_records_delivered_total",
      "gridrelay_rejected_total",
      "gridrelay_sink_errors_total",
      "gridrelay_spool_pending",
      "gridrelay_mqtt_connected",
      "gridrelay_spool_bytes",
      "gridrelay_mqtt_reconnects_total",
      "gridrelay_delivery_latency_seconds",
      "process_resident_memory_bytes",
      "process_start_time_seconds",
    ]
  ) {
    assert.ok(families.has(name), `${name} is exposed`);
  }
  assert.equal(families.get("gridrelay_messages_received_total")!.type, "counter");
  assert.equal(families.get("gridrelay_spool_pending")!.type, "gauge");
  const latency = families.get("gridrelay_delivery_latency_seconds")!;
  assert.equal(latency.type, "histogram");
  const count = latency.samples.find((s) => s.name.endsWith("_count"))!;
  assert.deepEqual(count.labels, { sink: "stdout" });
  assert.equal(count.value, 3);
  const overMinute = latency.samples.find((s) => s.labels.le === "60")!;
  assert.equal(overMinute.value, 2, "120 s falls in +Inf only");
});

Deno.test("an unlabelled counter or gauge shows 0 before anything happened", () => {
  const families = parseExposition(createWorkerMetrics().registry.render());
  assert.deepEqual(families.get("gridrelay_messages_received_total")!.samples, [
    { name: "gridrelay_messages_received_total", labels: {}, value: 0 },
  ]);
  assert.deepEqual(families.get("gridrelay_rejected_total")!.samples, [], "no reason seen yet");
});

Deno.test("label values and help text are escaped: backslash, quote and newline", () => {
  const metrics = new Metrics();
  const sink = 'my "odd" sink\\with\na newline';
  metrics.counter("gridrelay_records_delivered_total", "Records\\delivered\nby sink", "sink").add(
    5,
    sink,
  );
  const text = metrics.render();
  assert.match(text, /sink="my \\"odd\\" sink\\\\with\\na newline"/);
  const family = parseExposition(text).get("gridrelay_records_delivered_total")!;
  assert.equal(family.help, "Records\\delivered\nby sink");
  assert.deepEqual(family.samples[0].labels, { sink });
});

Deno.test("non-finite values are spelled +Inf, -Inf and NaN", () => {
  const metrics = new Metrics();
  const gauge = metrics.gauge("gridrelay_test_value", "A test value.", "case");
  gauge.set(Infinity, "up");
  gauge.set(-Infinity, "down");
  gauge.set(NaN, "none");
  const values = parseExposition(metrics.render()).get("gridrelay_test_value")!.samples;
  assert.deepEqual(values.map((sample) => sample.value), [Infinity, -Infinity, NaN]);
});

async function withServer(
  options: {
    ready: () => boolean;
    unready?: () => string | undefined;
    beforeScrape?: () => void;
    metrics?: Metrics;
  },
  fn: (base: string) => Promise<void>,
): Promise<void> {
  const server = serveHttp({
    port: 0,
    hostname: "127.0.0.1",
    metrics: options.metrics ?? createWorkerMetrics().registry,
    ready: options.ready,
    unready: options.unready,
    beforeScrape: options.beforeScrape,
  });
  try {
    await fn(`http://127.0.0.1:${server.addr.port}`);
  } finally {
    await server.shutdown();
  }
}

async function get(url: string, init?: RequestInit): Promise<{ status: number; body: string }> {
  const response = await fetch(url, init);
  return { status: response.status, body: await response.text() };
}

Deno.test("/healthz answers 200 while the process is alive", async () => {
  await withServer({ ready: () => false }, async (base) => {
    assert.deepEqual(await get(`${base}/healthz`), { status: 200, body: "ok\n" });
  });
});

Deno.test("/readyz answers 200 only while connected and subscribed, 503 otherwise", async () => {
  let ready = false;
  await withServer({ ready: () => ready }, async (base) => {
    assert.deepEqual(await get(`${base}/readyz`), {
      status: 503,
      body: "not connected and subscribed to the broker\n",
    });
    ready = true;
    assert.deepEqual(await get(`${base}/readyz`), { status: 200, body: "ready\n" });
  });
});

Deno.test("/readyz answers 503 with the reason when the worker, though connected, cannot do its job", async () => {
  let reason: string | undefined;
  await withServer({ ready: () => true, unready: () => reason }, async (base) => {
    assert.deepEqual(await get(`${base}/readyz`), { status: 200, body: "ready\n" });
    reason = "acknowledging nothing: the disk reported an error";
    assert.deepEqual(await get(`${base}/readyz`), {
      status: 503,
      body: "acknowledging nothing: the disk reported an error\n",
    });
  });
});

Deno.test("/metrics refreshes gauges first and serves the text format's content type", async () => {
  const metrics = createWorkerMetrics();
  let scrapes = 0;
  await withServer({
    ready: () => true,
    metrics: metrics.registry,
    beforeScrape: () => metrics.spoolBytes.set(++scrapes * 100),
  }, async (base) => {
    const response = await fetch(`${base}/metrics`);
    assert.equal(response.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const families = parseExposition(await response.text());
    assert.equal(families.get("gridrelay_spool_bytes")!.samples[0].value, 100);
  });
});

Deno.test("a failing refresh is one failed scrape (500 with the reason), not a crash", async () => {
  await withServer({
    ready: () => true,
    beforeScrape: () => {
      throw new Error("the spool is closed");
    },
  }, async (base) => {
    assert.deepEqual(await get(`${base}/metrics`), {
      status: 500,
      body: "metrics unavailable: the spool is closed\n",
    });
    assert.equal((await get(`${base}/healthz`)).status, 200);
  });
});

Deno.test("other paths are 404 with a hint; other methods are 405", async () => {
  await withServer({ ready: () => true }, async (base) => {
    assert.deepEqual(await get(`${base}/`), {
      status: 404,
      body: "not found: try /healthz, /readyz or /metrics\n",
    });
    const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
    await post.body?.cancel();
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
  });
});

Deno.test("HEAD answers with the status and no body", async () => {
  await withServer({ ready: () => false }, async (base) => {
    assert.deepEqual(await get(`${base}/healthz`, { method: "HEAD" }), { status: 200, body: "" });
    assert.deepEqual(await get(`${base}/readyz`, { method: "HEAD" }), { status: 503, body: "" });
  });
});
