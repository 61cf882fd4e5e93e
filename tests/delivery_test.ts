import assert from "node:assert/strict";
import { configureSync, type LogRecord, resetSync } from "@logtape/logtape";
import { runDeadLetterWriter, runSink } from "../src/delivery.ts";
import { createWorkerMetrics, type WorkerMetrics } from "../src/metrics.ts";
import { recordText } from "../src/record.ts";
import { Spool } from "../src/spool.ts";
import {
  type OutputRecord,
  RecordsRefusedError,
  RetryLaterError,
  type Sink,
} from "../sinks/sink.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";
const BACKOFF = { minMs: 1, maxMs: 4 };

// A sink that keeps what it accepted and lets a test await a count, with an optional
// behaviour per write call (throw, block, refuse).
class TestSink implements Sink {
  readonly name: string;
  readonly received: string[] = [];
  readonly signals: AbortSignal[] = [];
  calls = 0;
  readonly #onWrite?: (call: number, records: OutputRecord[], signal: AbortSignal) => Promise<void>;
  #waiters: Array<() => void> = [];

  constructor(
    name: string,
    onWrite?: (call: number, records: OutputRecord[], signal: AbortSignal) => Promise<void>,
  ) {
    this.name = name;
    this.#onWrite = onWrite;
  }

  async write(records: OutputRecord[], signal: AbortSignal): Promise<void> {
    const call = ++this.calls;
    this.signals.push(signal);
    this.#wake();
    await this.#onWrite?.(call, records, signal);
    this.received.push(...records.map(recordText));
    this.#wake();
  }

  /** Resolves once `check()` holds, re-checked after every write call starts or ends. */
  until(check: (sink: TestSink) => boolean): Promise<void> {
    if (check(this)) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = () => {
        if (!check(this)) return;
        this.#waiters = this.#waiters.filter((other) => other !== waiter);
        resolve();
      };
      this.#waiters.push(waiter);
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((done) => (resolve = done));
  return { promise, resolve };
}

// Resolves once `sink` has acknowledged everything in the spool.
async function caughtUp(spool: Spool, sink: string): Promise<void> {
  while (spool.pending(sink) > 0) await spool.changed();
}

function records(from: number, to: number): string[] {
  return Array.from({ length: to - from + 1 }, (_, i) => `{"n":${from + i}}`);
}

function append(spool: Spool, texts: string[], receivedAt = 1000): void {
  spool.append([{ records: texts, deadLetters: [], receivedAt, topic: TOPIC }]);
}

interface Harness {
  spool: Spool;
  metrics: WorkerMetrics;
  dir: string;
  stop: AbortController;
  abort: AbortController;
  run(sink: Sink, batchSize?: number): Promise<void>;
}

async function withSpool(sinks: string[], test: (harness: Harness) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "delivery_test_" });
  const spool = Spool.open({ path: `${dir}/spool.db`, sinks, maxBytes: 10_000_000 });
  const metrics = createWorkerMetrics();
  const stop = new AbortController();
  const abort = new AbortController();
  const running: Promise<void>[] = [];
  const run = (sink: Sink, batchSize = 500) => {
    const done = runSink(sink, spool, {
      batchSize,
      backoff: BACKOFF,
      metrics,
      stop: stop.signal,
      abort: abort.signal,
    });
    running.push(done);
    return done;
  };
  try {
    await test({ spool, metrics, dir, stop, abort, run });
  } finally {
    abort.abort();
    await Promise.all(running);
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a sink that fails N times then succeeds gets every record once, in order", async () => {
  await withSpool(["flaky"], async ({ spool, metrics, stop, run }) => {
    const sink = new TestSink("flaky", (call) => {
      if (call <= 3) return Promise.reject(new Error(`outage ${call}`));
      return Promise.resolve();
    });
    append(spool, records(1, 5));
    const done = run(sink, 2);
    await sink.until((s) => s.received.length === 5);
    stop.abort();
    await done;
    assert.deepEqual(sink.received, records(1, 5));
    assert.equal(metrics.sinkErrors.value("flaky"), 3);
    assert.equal(metrics.recordsDelivered.value("flaky"), 5);
    assert.equal(spool.pending("flaky"), 0);
    assert.equal(spool.bytes, 0);
  });
});

Deno.test("a sink whose write throws synchronously is retried like any failure", async () => {
  await withSpool(["sync"], async ({ spool, metrics, stop, run }) => {
    let calls = 0;
    const received: string[] = [];
    const sink: Sink = {
      name: "sync",
      write(batch) {
        if (++calls === 1) throw new TypeError("not a promise");
        received.push(...batch.map(recordText));
        return Promise.resolve();
      },
    };
    append(spool, records(1, 2));
    stop.abort();
    await run(sink);
    assert.deepEqual(received, records(1, 2));
    assert.equal(metrics.sinkErrors.value("sync"), 1);
  });
});

Deno.test("a slow sink does not hold up a fast one", async () => {
  await withSpool(["slow", "fast"], async ({ spool, stop, run }) => {
    const release = deferred();
    const slow = new TestSink("slow", () => release.promise);
    const fast = new TestSink("fast");
    const slowDone = run(slow, 2);
    const fastDone = run(fast, 2);
    append(spool, records(1, 3));
    append(spool, records(4, 6));
    await caughtUp(spool, "fast");
    assert.deepEqual(fast.received, records(1, 6));
    assert.equal(slow.received.length, 0, "the slow sink is still on its first batch");
    assert.equal(spool.pending("slow"), 6);

    release.resolve();
    await slow.until((s) => s.received.length === 6);
    stop.abort();
    await Promise.all([slowDone, fastDone]);
    assert.deepEqual(slow.received, records(1, 6));
    assert.equal(spool.bytes, 0, "rows go once both sinks have them");
  });
});

Deno.test("the runner waits for new records and delivers them as they arrive", async () => {
  await withSpool(["stdout"], async ({ spool, stop, run }) => {
    const sink = new TestSink("stdout");
    const done = run(sink);
    append(spool, records(1, 1));
    await sink.until((s) => s.received.length === 1);
    append(spool, records(2, 3));
    await sink.until((s) => s.received.length === 3);
    stop.abort();
    await done;
    assert.deepEqual(sink.received, records(1, 3));
  });
});

Deno.test("stop drains everything spooled before the runner returns", async () => {
  await withSpool(["file"], async ({ spool, stop, run }) => {
    const sink = new TestSink("file");
    append(spool, records(1, 7));
    stop.abort();
    await run(sink, 3);
    assert.deepEqual(sink.received, records(1, 7));
    assert.equal(sink.calls, 3);
    assert.equal(spool.pending("file"), 0);
  });
});

Deno.test("abort aborts the in-flight write and leaves the batch in the spool", async () => {
  await withSpool(["webhook"], async ({ spool, abort, run }) => {
    const sink = new TestSink(
      "webhook",
      (_call, _records, signal) =>
        new Promise((_resolve, reject) => {
          signal.addEventListener("abort", () => reject(signal.reason), { once: true });
        }),
    );
    append(spool, records(1, 2));
    const done = run(sink);
    await sink.until((s) => s.calls === 1);
    abort.abort();
    await done;
    assert.equal(sink.signals[0].aborted, true);
    assert.deepEqual(sink.received, []);
    assert.equal(spool.pending("webhook"), 2);
  });
});

Deno.test("abort returns at once even when the sink ignores its signal", async () => {
  await withSpool(["stuck"], async ({ spool, abort, run }) => {
    const never = new Promise<void>(() => {});
    const sink = new TestSink("stuck", () => never);
    append(spool, records(1, 1));
    const done = run(sink);
    await sink.until((s) => s.calls === 1);
    abort.abort();
    await done;
    assert.equal(spool.pending("stuck"), 1);
  });
});

Deno.test("abort interrupts the back-off of a failing sink", async () => {
  await withSpool(["down"], async ({ spool, abort, stop }) => {
    const sink = new TestSink("down", () => Promise.reject(new Error("connection refused")));
    append(spool, records(1, 1));
    stop.abort(); // draining: a failing sink keeps retrying until abort
    const done = runSink(sink, spool, {
      batchSize: 10,
      backoff: { minMs: 60_000, maxMs: 60_000 },
      metrics: createWorkerMetrics(),
      stop: stop.signal,
      abort: abort.signal,
    });
    await sink.until((s) => s.calls === 1);
    abort.abort();
    await done;
    assert.equal(spool.pending("down"), 1);
  });
});

Deno.test("refused records land in the dead letters and the rest count as delivered", async () => {
  await withSpool(["webhook"], async ({ spool, metrics, stop, run }) => {
    const sink = new TestSink("webhook", (call) => {
      if (call > 1) return Promise.resolve();
      throw new RecordsRefusedError("HTTP 400", {
        refused: [{ index: 1, reason: "HTTP 400: n must be even" }],
      });
    });
    append(spool, records(1, 3), Date.UTC(2021, 6, 6, 12, 55, 0, 123));
    stop.abort();
    await run(sink);
    assert.equal(spool.pending("webhook"), 0);
    assert.equal(sink.calls, 1, "a refusal is final, not retried");
    assert.deepEqual(spool.readDeadLetters(10).map((letter) => JSON.parse(letter.line)), [{
      received_at: "2021-07-06T12:55:00.123+00:00",
      topic: TOPIC,
      reason: "HTTP 400: n must be even",
      code: "sink_refused",
      sink: "webhook",
      payload: '{"n":2}',
    }]);
    assert.equal(metrics.recordsDelivered.value("webhook"), 2);
    assert.equal(metrics.rejected.value("sink_refused"), 1);
  });
});

Deno.test("a spooled text that is not JSON is dead-lettered, not retried forever", async () => {
  await withSpool(["stdout"], async ({ spool, metrics, stop, run }) => {
    const sink = new TestSink("stdout");
    append(spool, ['{"n":1}', "{not json", '{"n":3}']);
    stop.abort();
    await run(sink);
    assert.deepEqual(sink.received, ['{"n":1}', '{"n":3}']);
    const [letter] = spool.readDeadLetters(10).map((entry) => JSON.parse(entry.line));
    assert.equal(letter.code, "invalid_record");
    assert.equal(letter.payload, "{not json");
    assert.equal(metrics.rejected.value("invalid_record"), 1);
  });
});

Deno.test("delivery latency is measured from receipt, per record", async () => {
  await withSpool(["stdout"], async ({ spool, metrics, stop, abort }) => {
    append(spool, records(1, 2), 10_000);
    stop.abort();
    await runSink(new TestSink("stdout"), spool, {
      batchSize: 10,
      backoff: BACKOFF,
      metrics,
      now: () => 12_500,
      stop: stop.signal,
      abort: abort.signal,
    });
    const [[sink, series]] = [...metrics.deliveryLatency.entries()];
    assert.equal(sink, "stdout");
    assert.equal(series.count, 2);
    assert.equal(series.sum, 5);
    assert.equal(metrics.spoolPending.value("stdout"), 0);
  });
});

Deno.test("the dead-letter writer appends lines to its file and removes them from the spool", async () => {
  await withSpool(["stdout"], async ({ spool, metrics, dir, stop, abort }) => {
    spool.append([{
      records: [],
      deadLetters: ['{"d":1}', '{"d":2}'],
      receivedAt: 1,
      topic: TOPIC,
    }]);
    spool.appendDeadLetters(['{"d":3}']);
    stop.abort();
    await runDeadLetterWriter(spool, {
      path: `${dir}/letters/dead-letter.jsonl`,
      maxBytes: 1_000_000,
      maxFiles: 2,
      batchSize: 2,
      backoff: BACKOFF,
      metrics,
      stop: stop.signal,
      abort: abort.signal,
    });
    assert.equal(
      await Deno.readTextFile(`${dir}/letters/dead-letter.jsonl`),
      '{"d":1}\n{"d":2}\n{"d":3}\n',
    );
    assert.deepEqual(spool.readDeadLetters(10), []);
    assert.equal(spool.bytes, 0);
    assert.equal(metrics.deadLetters.value(), 3);
  });
});

Deno.test("the dead-letter writer warns and retries until its file can be written", async () => {
  const warned = deferred();
  const logged: LogRecord[] = [];
  configureSync({
    sinks: {
      capture: (record) => {
        logged.push(record);
        warned.resolve();
      },
    },
    loggers: [
      { category: ["gridrelay", "delivery"], lowestLevel: "warning", sinks: ["capture"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  try {
    await withSpool(["stdout"], async ({ spool, metrics, dir, stop, abort }) => {
      // A file where the folder should be: every append fails until the test removes it.
      await Deno.writeTextFile(`${dir}/blocked`, "");
      spool.appendDeadLetters(['{"d":1}']);
      const path = `${dir}/blocked/dead-letter.jsonl`;
      const done = runDeadLetterWriter(spool, {
        path,
        maxBytes: 1_000_000,
        maxFiles: 1,
        backoff: BACKOFF,
        metrics,
        stop: stop.signal,
        abort: abort.signal,
      });
      await warned.promise;
      assert.equal(logged[0].properties.path, path);
      assert.match(String(logged[0].properties.error), new RegExp(`Cannot open ${path}`));
      await Deno.remove(`${dir}/blocked`);
      stop.abort();
      await done;
      assert.equal(await Deno.readTextFile(path), '{"d":1}\n');
      assert.deepEqual(spool.readDeadLetters(10), []);
      assert.equal(logged.length, 1, "retries within a minute are not logged again");
    });
  } finally {
    resetSync();
  }
});

Deno.test("a sink's own batchSize sets the most records per write", async () => {
  await withSpool(["webhook"], async ({ spool, stop, run }) => {
    const sizes: number[] = [];
    const sink = Object.assign(
      new TestSink("webhook", (_call, batch) => {
        sizes.push(batch.length);
        return Promise.resolve();
      }),
      { batchSize: 2 },
    );
    append(spool, records(1, 5));
    stop.abort();
    await run(sink, 500);
    assert.deepEqual(sizes, [2, 2, 1]);
    assert.deepEqual(sink.received, records(1, 5));
  });
});

Deno.test("a sink's own batchSize is honoured above the runner's too", async () => {
  await withSpool(["big"], async ({ spool, stop, run }) => {
    const sizes: number[] = [];
    const sink = Object.assign(
      new TestSink("big", (_call, batch) => {
        sizes.push(batch.length);
        return Promise.resolve();
      }),
      { batchSize: 100 },
    );
    append(spool, records(1, 5));
    stop.abort();
    await run(sink, 3);
    assert.deepEqual(sizes, [5]);
  });
});

Deno.test("a failed batch is retried as the very same records, even when more have arrived", async () => {
  await withSpool(["webhook"], async ({ spool, stop, run }) => {
    const batches: string[][] = [];
    const sink = new TestSink("webhook", (call, batch) => {
      batches.push(batch.map(recordText));
      if (call === 1) {
        append(spool, records(3, 4)); // arrives while the first attempt fails
        return Promise.reject(new Error("503"));
      }
      return Promise.resolve();
    });
    append(spool, records(1, 2));
    const done = run(sink, 10);
    await sink.until((s) => s.received.length === 4);
    stop.abort();
    await done;
    assert.deepEqual(batches, [records(1, 2), records(1, 2), records(3, 4)]);
  });
});

Deno.test("RetryLaterError: the next attempt waits at least as long as it asks", async () => {
  await withSpool(["limited"], async ({ spool, metrics, stop, run }) => {
    const attempts: number[] = [];
    const sink = new TestSink("limited", (call) => {
      attempts.push(performance.now());
      if (call === 1) {
        return Promise.reject(new RetryLaterError("429 Too Many Requests", { retryAfterMs: 300 }));
      }
      return Promise.resolve();
    });
    append(spool, records(1, 1));
    stop.abort();
    await run(sink); // back-off alone would retry within 4 ms
    assert.equal(attempts.length, 2);
    assert.ok(attempts[1] - attempts[0] >= 300, `retried after ${attempts[1] - attempts[0]} ms`);
    assert.equal(metrics.sinkErrors.value("limited"), 1);
    assert.deepEqual(sink.received, records(1, 1));
  });
});

Deno.test("RetryLaterError holds a wait between 0 and five minutes", () => {
  assert.equal(new RetryLaterError("x", { retryAfterMs: -10 }).retryAfterMs, 0);
  assert.equal(new RetryLaterError("x", { retryAfterMs: Number.NaN }).retryAfterMs, 0);
  assert.equal(new RetryLaterError("x", { retryAfterMs: 1e12 }).retryAfterMs, 300_000);
  assert.equal(new RetryLaterError("x", { retryAfterMs: 1500.2 }).retryAfterMs, 1501);
});

Deno.test("a sink that takes JSON Lines gets the spooled bytes, batch by batch across chunks", async () => {
  await withSpool(["file"], async ({ spool, metrics, stop, run }) => {
    const batches: string[] = [];
    const sink: Sink = {
      name: "file",
      write: () => Promise.reject(new Error("write is not called when writeLines exists")),
      writeLines: (lines) => {
        batches.push(new TextDecoder().decode(lines));
        return Promise.resolve();
      },
    };
    append(spool, records(1, 2));
    append(spool, records(3, 5));
    stop.abort();
    await run(sink, 3);
    assert.deepEqual(batches, ['{"n":1}\n{"n":2}\n{"n":3}\n', '{"n":4}\n{"n":5}\n']);
    assert.equal(metrics.recordsDelivered.value("file"), 5);
    assert.equal(spool.bytes, 0);
  });
});

Deno.test("a refusal counts among the records the sink was given, after unparsable ones were left out", async () => {
  await withSpool(["webhook"], async ({ spool, stop, run }) => {
    const sink = new TestSink("webhook", (call, given) => {
      if (call > 1) return Promise.resolve();
      assert.deepEqual(given.map(recordText), ['{"n":1}', '{"n":3}', '{"n":4}']);
      throw new RecordsRefusedError("HTTP 400", { refused: [{ index: 1, reason: "HTTP 400" }] });
    });
    append(spool, ['{"n":1}', "{not json", '{"n":3}', '{"n":4}']);
    stop.abort();
    await run(sink);
    const letters = spool.readDeadLetters(10).map((entry) => JSON.parse(entry.line));
    assert.deepEqual(letters.map((letter) => [letter.code, letter.payload]), [
      ["invalid_record", "{not json"],
      ["sink_refused", '{"n":3}'],
    ]);
  });
});

Deno.test("JSON Lines bytes copied for a batch that spans chunks are released once the sink is done", async () => {
  await withSpool(["file"], async ({ spool, stop, run }) => {
    const lent: Uint8Array[] = [];
    const sink: Sink = {
      name: "file",
      write: () => Promise.reject(new Error("not called")),
      writeLines: (lines) => {
        assert.equal(new TextDecoder().decode(lines), '{"n":1}\n{"n":2}\n{"n":3}\n');
        lent.push(lines);
        return Promise.resolve();
      },
    };
    append(spool, records(1, 2));
    append(spool, records(3, 3));
    stop.abort();
    await run(sink);
    assert.equal(lent.length, 1);
    assert.equal(lent[0].byteLength, 0, "the copy was released after the write");
    assert.equal(spool.pending("file"), 0);
  });
});
