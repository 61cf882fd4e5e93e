/**
 * In-process metrics with Prometheus text exposition. Counters and gauges are
 * keyed by one optional label value; histograms have fixed buckets. The
 * registry only counts: serving `/metrics` is `src/http.ts`'s job.
 * @module
 */

type Kind = "counter" | "gauge" | "histogram";

interface Family {
  readonly name: string;
  readonly help: string;
  readonly kind: Kind;
  readonly label?: string;
}

/**
 * A monotonically increasing count, optionally split by one label.
 *
 * @example
 * ```ts
 * const metrics = new Metrics();
 * const delivered = metrics.counter("gridrelay_records_delivered_total", "Records delivered", "sink");
 * delivered.add(3, "file");
 * ```
 */
export class Counter {
  readonly #values = new Map<string, number>();
  /** Adds `amount` (default 1) to the series with label value `labelValue`. */
  add(amount = 1, labelValue = ""): void {
    this.#values.set(labelValue, (this.#values.get(labelValue) ?? 0) + amount);
  }
  /** The current value of one series. */
  value(labelValue = ""): number {
    return this.#values.get(labelValue) ?? 0;
  }
  /** Every series, by label value. */
  entries(): IterableIterator<[string, number]> {
    return this.#values.entries();
  }
}

/**
 * A value that goes up and down; set directly, or read from a callback at
 * scrape time.
 *
 * @example
 * ```ts
 * const metrics = new Metrics();
 * metrics.gauge("gridrelay_mqtt_connected", "1 while connected").set(1);
 * ```
 */
export class Gauge {
  readonly #values = new Map<string, number>();
  #collect?: () => Iterable<[string, number]>;
  /** Sets the series with label value `labelValue`. */
  set(value: number, labelValue = ""): void {
    this.#values.set(labelValue, value);
  }
  /** The current value of one series. */
  value(labelValue = ""): number {
    if (this.#collect) {
      for (const [label, value] of this.#collect()) if (label === labelValue) return value;
      return 0;
    }
    return this.#values.get(labelValue) ?? 0;
  }
  /** Reads every series from `collect` at scrape time instead of stored values. */
  collect(collect: () => Iterable<[string, number]>): void {
    this.#collect = collect;
  }
  /** Every series, by label value. */
  entries(): Iterable<[string, number]> {
    return this.#collect ? this.#collect() : this.#values.entries();
  }
}

/**
 * A distribution of observed values in cumulative buckets.
 *
 * @example
 * ```ts
 * const metrics = new Metrics();
 * const latency = metrics.histogram("gridrelay_delivery_latency_seconds", "Receipt to delivery", "sink");
 * latency.observe(0.012, "file");
 * ```
 */
export class Histogram {
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();
  constructor(readonly buckets: readonly number[]) {}
  /** Records one observation in the series with label value `labelValue`. */
  observe(value: number, labelValue = ""): void {
    let series = this.#series.get(labelValue);
    if (!series) {
      series = { counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.#series.set(labelValue, series);
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]) series.counts[i]++;
    series.sum += value;
    series.count++;
  }
  /** Every series, by label value. */
  entries(): IterableIterator<[string, { counts: number[]; sum: number; count: number }]> {
    return this.#series.entries();
  }
}

/**
 * The set of metric families a worker exposes, rendered in the Prometheus
 * text exposition format (version 0.0.4).
 *
 * @example
 * ```ts
 * const metrics = new Metrics();
 * metrics.counter("gridrelay_messages_received_total", "Messages taken off the broker").add();
 * console.log(metrics.render());
 * ```
 */
export class Metrics {
  readonly #families: Array<{ family: Family; metric: Counter | Gauge | Histogram }> = [];

  /** Registers (or returns the already registered) counter `name`. */
  counter(name: string, help: string, label?: string): Counter {
    return this.#register({ name, help, kind: "counter", label }, () => new Counter());
  }

  /** Registers (or returns the already registered) gauge `name`. */
  gauge(name: string, help: string, label?: string): Gauge {
    return this.#register({ name, help, kind: "gauge", label }, () => new Gauge());
  }

  /** Registers (or returns the already registered) histogram `name`. */
  histogram(
    name: string,
    help: string,
    options: { label?: string; buckets: readonly number[] },
  ): Histogram {
    return this.#register(
      { name, help, kind: "histogram", label: options.label },
      () => new Histogram(options.buckets),
    );
  }

  /** Every family in the Prometheus text exposition format. */
  render(): string {
    const lines: string[] = [];
    for (const { family, metric } of this.#families) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      lines.push(`# TYPE ${family.name} ${family.kind}`);
      if (metric instanceof Histogram) {
        for (const [labelValue, series] of metric.entries()) {
          const base = family.label ? `${family.label}="${escapeLabel(labelValue)}",` : "";
          metric.buckets.forEach((bound, i) => {
            lines.push(`${family.name}_bucket{${base}le="${bound}"} ${series.counts[i]}`);
          });
          lines.push(`${family.name}_bucket{${base}le="+Inf"} ${series.count}`);
          const labels = family.label ? `{${family.label}="${escapeLabel(labelValue)}"}` : "";
          lines.push(`${family.name}_sum${labels} ${formatValue(series.sum)}`);
          lines.push(`${family.name}_count${labels} ${series.count}`);
        }
        continue;
      }
      let samples = 0;
      for (const [labelValue, value] of metric.entries()) {
        const labels = family.label ? `{${family.label}="${escapeLabel(labelValue)}"}` : "";
        lines.push(`${family.name}${labels} ${formatValue(value)}`);
        samples++;
      }
      // An unlabelled series exists from the start, so rate() and alerts see 0, not "no data".
      if (samples === 0 && !family.label) lines.push(`${family.name} 0`);
    }
    return lines.join("\n") + "\n";
  }

  #register<T extends Counter | Gauge | Histogram>(family: Family, create: () => T): T {
    const existing = this.#families.find((entry) => entry.family.name === family.name);
    if (existing) return existing.metric as T;
    const metric = create();
    this.#families.push({ family, metric });
    return metric;
  }
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function escapeHelp(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** Prometheus spells the non-finite values `+Inf`, `-Inf` and `NaN`; JavaScript does not. */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** Latency buckets, in seconds, from a millisecond to a minute. */
const LATENCY_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/**
 * The metrics every part of a worker reports to, under the names SPEC §3
 * "Metrics" fixes.
 *
 * @example
 * ```ts
 * const metrics = createWorkerMetrics();
 * metrics.recordsDelivered.add(10, "stdout");
 * ```
 */
export function createWorkerMetrics(registry: Metrics = new Metrics()): WorkerMetrics {
  return {
    registry,
    messagesReceived: registry.counter(
      "gridrelay_messages_received_total",
      "MQTT messages taken off the broker.",
    ),
    recordsDelivered: registry.counter(
      "gridrelay_records_delivered_total",
      "Records a sink accepted.",
      "sink",
    ),
    rejected: registry.counter(
      "gridrelay_rejected_total",
      "Payloads, readings and records rejected, by reason; each one is in the dead letters.",
      "reason",
    ),
    dropped: registry.counter(
      "gridrelay_dropped_total",
      "Readings dropped on purpose, by reason (MISSING_VID=drop); not dead-lettered.",
      "reason",
    ),
    sinkErrors: registry.counter(
      "gridrelay_sink_errors_total",
      "Failed sink writes; each failed batch is retried.",
      "sink",
    ),
    spoolPending: registry.gauge(
      "gridrelay_spool_pending",
      "Records in the spool that a sink has not delivered yet.",
      "sink",
    ),
    spoolBytes: registry.gauge(
      "gridrelay_spool_bytes",
      "Bytes of records and dead letters waiting in the spool.",
    ),
    mqttConnected: registry.gauge(
      "gridrelay_mqtt_connected",
      "1 while connected to the broker, 0 otherwise.",
    ),
    mqttReconnects: registry.counter(
      "gridrelay_mqtt_reconnects_total",
      "Connections to the broker lost and attempted again.",
    ),
    deadLetters: registry.counter(
      "gridrelay_dead_letters_total",
      "Lines written to the dead-letter file.",
    ),
    residentMemory: registry.gauge(
      "process_resident_memory_bytes",
      "Resident memory of the worker process, in bytes.",
    ),
    startTime: registry.gauge(
      "process_start_time_seconds",
      "When the worker process started, in seconds since the Unix epoch.",
    ),
    deliveryLatency: registry.histogram(
      "gridrelay_delivery_latency_seconds",
      "Time from receipt of a message to delivery of its records, by sink.",
      { label: "sink", buckets: LATENCY_BUCKETS },
    ),
  };
}

/** The metrics of one worker; see {@linkcode createWorkerMetrics}. */
export interface WorkerMetrics {
  readonly registry: Metrics;
  readonly messagesReceived: Counter;
  readonly recordsDelivered: Counter;
  readonly rejected: Counter;
  readonly dropped: Counter;
  readonly sinkErrors: Counter;
  readonly spoolPending: Gauge;
  readonly spoolBytes: Gauge;
  readonly mqttConnected: Gauge;
  readonly mqttReconnects: Counter;
  readonly deadLetters: Counter;
  /** Set at each scrape (the worker reads `Deno.memoryUsage().rss`). */
  readonly residentMemory: Gauge;
  /** Set once at start-up; a change means the process restarted. */
  readonly startTime: Gauge;
  readonly deliveryLatency: Histogram;
}
