/**
 * The once-a-minute summary line (src/summary.ts): what it says, computed
 * from the metrics, and its timer, which stops when asked (the sanitizers
 * prove it is gone).
 */

import assert from "node:assert/strict";
import { createWorkerMetrics } from "../src/metrics.ts";
import {
  startSummary,
  summarize,
  type Summary,
  type SummarySnapshot,
  takeSnapshot,
} from "../src/summary.ts";

const ZERO: SummarySnapshot = {
  messagesIn: 0,
  delivered: { stdout: 0, file: 0 },
  rejected: 0,
  dropped: 0,
  sinkErrors: { stdout: 0, file: 0 },
};

Deno.test("the line names messages in, records out per sink, rejections and pending per sink", () => {
  const after: SummarySnapshot = {
    messagesIn: 120,
    delivered: { stdout: 118, file: 115 },
    rejected: 2,
    dropped: 0,
    sinkErrors: { stdout: 0, file: 0 },
  };
  const summary = summarize(ZERO, after, { pending: { stdout: 0, file: 3 }, seconds: 60 });
  assert.equal(
    summary.message,
    "Last 60 s: 120 messages in; delivered stdout 118, file 115; 2 rejected; pending stdout 0, file 3",
  );
  assert.deepEqual(summary.fields, {
    periodSeconds: 60,
    messagesIn: 120,
    delivered: { stdout: 118, file: 115 },
    rejected: 2,
    dropped: 0,
    sinkErrors: { stdout: 0, file: 0 },
    pending: { stdout: 0, file: 3 },
  });
});

Deno.test("the line counts only what happened since the previous one", () => {
  const before: SummarySnapshot = { ...ZERO, messagesIn: 100, delivered: { stdout: 90, file: 90 } };
  const after: SummarySnapshot = { ...ZERO, messagesIn: 130, delivered: { stdout: 120, file: 95 } };
  const { fields } = summarize(before, after, { pending: { stdout: 0, file: 25 }, seconds: 60 });
  assert.equal(fields.messagesIn, 30);
  assert.deepEqual(fields.delivered, { stdout: 30, file: 5 });
});

Deno.test("dropped readings and failed writes are named only when there were some", () => {
  const quiet = summarize(ZERO, ZERO, { pending: { stdout: 0, file: 0 }, seconds: 60 });
  assert.doesNotMatch(quiet.message, /dropped|failed/);
  const after: SummarySnapshot = { ...ZERO, dropped: 4, sinkErrors: { stdout: 0, file: 7 } };
  const busy = summarize(ZERO, after, { pending: { stdout: 0, file: 0 }, seconds: 60 });
  assert.match(busy.message, /; 4 dropped; failed writes stdout 0, file 7; pending/);
});

Deno.test("a snapshot sums rejections of every reason and reads each sink's counters", () => {
  const metrics = createWorkerMetrics();
  metrics.messagesReceived.add(5);
  metrics.rejected.add(2, "invalid_json");
  metrics.rejected.add(1, "missing_vid");
  metrics.recordsDelivered.add(4, "file");
  metrics.sinkErrors.add(1, "file");
  assert.deepEqual(takeSnapshot(metrics, ["stdout", "file"]), {
    messagesIn: 5,
    delivered: { stdout: 0, file: 4 },
    rejected: 3,
    dropped: 0,
    sinkErrors: { stdout: 0, file: 1 },
  });
});

Deno.test("startSummary logs one line per interval with that interval's counts, until stopped", async () => {
  const metrics = createWorkerMetrics();
  const lines: Summary[] = [];
  let wake = () => {};
  const summary = startSummary({
    metrics,
    sinks: ["stdout"],
    pending: () => 7,
    intervalMs: 20,
    log: (line) => {
      lines.push(line);
      wake();
    },
  });
  const next = () => new Promise<void>((resolve) => (wake = resolve));
  try {
    metrics.messagesReceived.add(3);
    metrics.recordsDelivered.add(3, "stdout");
    await next();
    metrics.messagesReceived.add(1);
    await next();
  } finally {
    summary.stop();
  }
  assert.equal(
    lines[0].message,
    "Last 0.02 s: 3 messages in; delivered stdout 3; 0 rejected; pending stdout 7",
  );
  assert.equal(lines[1].fields.messagesIn, 1);
  assert.deepEqual(lines[1].fields.delivered, { stdout: 0 });
});
