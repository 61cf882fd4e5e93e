/**
 * The durable hand-off between the pipeline and the sinks: an SQLite database
 * (WAL) where each sink reads at its own pace behind its own cursor, and rows
 * every sink has delivered are removed. A commit reaches the disk when
 * {@linkcode Spool.sync} resolves: the WAL is `fdatasync`ed off the main
 * thread, so one sync covers every commit made while the last one ran (group
 * commit). Byte accounting and pruning cost O(rows touched).
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { getLogger } from "@logtape/logtape";

const logger = getLogger(["gridrelay", "spool"]);

/**
 * Where the spool lives, which sinks read from it, and how large it may grow.
 *
 * @example
 * ```ts
 * const options: SpoolOptions = { path: "./data/spool.db", sinks: ["stdout", "file"], maxBytes: 512 * 2 ** 20 };
 * ```
 */
export interface SpoolOptions {
  /** The database file, e.g. `${DATA_DIR}/spool.db`; its folder must exist. */
  readonly path: string;
  /** Names of the configured sinks; each one gets a cursor. */
  readonly sinks: readonly string[];
  /** Size limit of pending records plus dead letters, in bytes; see {@linkcode Spool.full}. */
  readonly maxBytes: number;
}

/**
 * What one message produced: its records and its dead-letter lines.
 *
 * @example
 * ```ts
 * const entry: SpoolEntry = {
 *   records: ['{"time":"2021-07-06T12:55:00+00:00","data":{}}'],
 *   deadLetters: [],
 *   receivedAt: Date.now(),
 *   topic: "a/b827eb2bb2a9/u/data",
 * };
 * ```
 */
export interface SpoolEntry {
  /** Record JSON texts, one line each. */
  readonly records: readonly string[];
  /** Dead-letter JSON lines (see `src/dead_letter.ts`). */
  readonly deadLetters: readonly string[];
  /** When the worker took the message, in ms since the epoch; kept per record for latency metrics. */
  readonly receivedAt: number;
  /** The message's topic; kept per record so a record a sink refuses can be dead-lettered with it. */
  readonly topic: string;
}

/**
 * One record as a sink's cursor reads it.
 *
 * @example
 * ```ts
 * const [first]: SpooledRecord[] = spool.read("file", 1);
 * spool.acknowledge("file", first.id);
 * ```
 */
export interface SpooledRecord {
  /** Position in the spool; increases with every record appended, never reused. */
  readonly id: number;
  /** The record's JSON text. */
  readonly text: string;
  /** When the message was received, in ms since the epoch. */
  readonly receivedAt: number;
  /** The message's topic. */
  readonly topic: string;
}

/**
 * One dead-letter line waiting to be written to the dead-letter file.
 *
 * @example
 * ```ts
 * const letters: SpooledDeadLetter[] = spool.readDeadLetters(100);
 * ```
 */
export interface SpooledDeadLetter {
  /** Position in the dead-letter queue; increases, never reused. */
  readonly id: number;
  /** The dead-letter JSON line. */
  readonly line: string;
}

/**
 * Options of {@linkcode Spool.acknowledge}.
 *
 * @example
 * ```ts
 * spool.acknowledge("webhook", 42, { deadLetters: [line] });
 * ```
 */
export interface AcknowledgeOptions {
  /** Dead-letter lines committed in the same transaction as the cursor (records the sink refused). */
  readonly deadLetters?: readonly string[];
}

/** Records per multi-row INSERT; the rest of a batch goes row by row. */
const INSERT_ROWS = 16;

/** WAL pages (4 KiB each) after which a commit checkpoints them into the database. */
const WAL_CHECKPOINT_PAGES = 16_384;

// Bumped when the schema changes; open() refuses a database from a newer version.
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS records (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  text TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  topic TEXT NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  line TEXT NOT NULL,
  bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO totals (name, value) VALUES ('bytes', 0);
`;

/**
 * The spool. Synchronous (SQLite calls block for the length of an fsync),
 * single-process: the database is opened in exclusive locking mode, so a
 * second worker on the same `DATA_DIR` fails at start-up instead of sharing
 * cursors.
 *
 * @example
 * ```ts
 * const spool = Spool.open({ path: "./data/spool.db", sinks: ["stdout"], maxBytes: 2 ** 29 });
 * spool.append([{ records: ['{"time":"2021-07-06T12:55:00+00:00","data":{}}'], deadLetters: [], receivedAt: Date.now(), topic: "a/x/u/data" }]);
 * const batch = spool.read("stdout", 500);
 * spool.acknowledge("stdout", batch[batch.length - 1].id);
 * spool.close();
 * ```
 */
export class Spool {
  readonly #db: DatabaseSync;
  readonly #maxBytes: number;
  readonly #cursors: Map<string, number>;
  readonly #statements: Statements;
  readonly #waiters = new Set<() => void>();
  readonly #wal: WalSync;
  readonly #recent = new RecentRecords(RECENT_RECORDS_MAX_BYTES);
  #bytes: number;
  #lastId: number;
  // Every record with an id at or below this has been delivered by every sink and removed.
  #floor: number;

  private constructor(
    db: DatabaseSync,
    maxBytes: number,
    cursors: Map<string, number>,
    wal: WalSync,
  ) {
    this.#db = db;
    this.#wal = wal;
    this.#maxBytes = maxBytes;
    this.#cursors = cursors;
    this.#statements = prepareStatements(db);
    this.#bytes = Number(this.#statements.bytes.get()?.value ?? 0);
    this.#lastId = Number(this.#statements.lastId.get()?.seq ?? 0);
    this.#floor = Math.min(...cursors.values());
  }

  /**
   * Opens (creating if needed) the spool at `options.path`, adds a cursor at
   * the oldest pending record for each sink it has not seen, and drops the
   * cursors of sinks no longer configured, so their rows can be pruned.
   * Throws an error naming the path when the database cannot be opened.
   *
   * @example
   * ```ts
   * const spool = Spool.open({ path: "./data/spool.db", sinks: ["stdout", "file"], maxBytes: 2 ** 29 });
   * ```
   */
  static open(options: SpoolOptions): Spool {
    const { path, maxBytes } = options;
    const sinks = [...new Set(options.sinks)];
    if (sinks.length === 0) {
      throw new Error(
        `Cannot open the spool ${path} without sinks: records would pile up unread. Configure at least one sink (SINKS).`,
      );
    }
    if (!(maxBytes > 0)) {
      throw new RangeError(
        `The spool's maxBytes must be a positive number of bytes, got ${maxBytes}.`,
      );
    }
    let db: DatabaseSync | undefined;
    let wal: WalSync | undefined;
    try {
      db = new DatabaseSync(path);
      const version = Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new Error(
          `it was written by a newer gridrelay (schema ${version}, this one knows ${SCHEMA_VERSION}); run that version or move the file away`,
        );
      }
      // EXCLUSIVE first: in WAL mode it keeps the wal-index in memory and holds the lock until close.
      db.exec("PRAGMA locking_mode = EXCLUSIVE");
      const mode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode;
      if (mode !== "wal") throw new Error(`SQLite refused WAL mode (journal_mode is ${mode})`);
      // NORMAL: SQLite syncs at checkpoints (so the database is never corrupted) but not at each
      // commit; sync() makes commits durable, off the main thread, before the broker is told.
      db.exec("PRAGMA synchronous = NORMAL");
      // A checkpoint blocks the thread for its writes and two fsyncs; rows live briefly, so a
      // larger WAL (64 MiB) checkpoints less often and writes each reused page once per round.
      db.exec(`PRAGMA wal_autocheckpoint = ${WAL_CHECKPOINT_PAGES}`);
      db.exec(`BEGIN IMMEDIATE; ${SCHEMA} PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT;`);
      const cursors = syncCursors(db, sinks);
      wal = new WalSync(`${path}-wal`);
      const spool = new Spool(db, maxBytes, cursors, wal);
      spool.#prune();
      return spool;
    } catch (error) {
      if (db?.isTransaction) db.exec("ROLLBACK");
      if (db?.isOpen) db.close();
      wal?.close();
      const message = error instanceof Error ? error.message : String(error);
      const hint = /locked|busy/i.test(message)
        ? "Another gridrelay worker seems to use the same DATA_DIR; give each worker its own."
        : "Check that its folder exists and that the worker may read and write it (--allow-read and --allow-write for that folder).";
      throw new Error(`Cannot open the spool database ${path}: ${message}. ${hint}`, {
        cause: error,
      });
    }
  }

  /** Bytes of pending records (text and topic) and dead letters, UTF-8. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether the spool has reached its size limit; the intake should pause until {@linkcode Spool.changed}. */
  get full(): boolean {
    return this.#bytes >= this.#maxBytes;
  }

  /** The configured size limit in bytes. */
  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** The names of the sinks with a cursor. */
  get sinks(): readonly string[] {
    return [...this.#cursors.keys()];
  }

  /**
   * Appends the records and dead letters of `entries` in one transaction, so
   * either all of them are committed when it returns or it throws and none
   * are; they are durable once a later {@linkcode Spool.sync} resolves. It
   * never refuses for size: pausing the intake on {@linkcode Spool.full} is
   * the caller's job.
   *
   * @example
   * ```ts
   * spool.append([{ records: [text], deadLetters: [], receivedAt: Date.now(), topic: "a/x/u/data" }]);
   * ```
   */
  append(entries: readonly SpoolEntry[]): void {
    let added = 0;
    let lastId = this.#lastId;
    let appended = 0;
    // Each record's four columns, in order, for the multi-row INSERTs.
    const columns: (string | number)[] = [];
    const sizes: number[] = [];
    this.#transaction(() => {
      const { insertRecord, insertRecords, insertDeadLetter } = this.#statements;
      for (const entry of entries) {
        const { receivedAt, topic } = entry;
        const topicBytes = utf8Length(topic);
        for (const text of entry.records) {
          const bytes = utf8Length(text) + topicBytes;
          columns.push(text, receivedAt, topic, bytes);
          sizes.push(bytes);
          added += bytes;
        }
        for (const line of entry.deadLetters) {
          const bytes = utf8Length(line);
          insertDeadLetter.run(line, bytes);
          added += bytes;
          appended++;
        }
      }
      // Rows per statement cost less than statements; within one, ids are given in row order.
      const rows = sizes.length;
      let row = 0;
      for (; row + INSERT_ROWS <= rows; row += INSERT_ROWS) {
        const start = row * 4;
        lastId = Number(
          insertRecords.run(...columns.slice(start, start + INSERT_ROWS * 4)).lastInsertRowid,
        );
      }
      for (; row < rows; row++) {
        const start = row * 4;
        lastId = Number(insertRecord.run(...columns.slice(start, start + 4)).lastInsertRowid);
      }
      appended += rows;
      if (added > 0) this.#statements.addBytes.run(added);
    });
    // Record ids are dense (see pending()): the rows just inserted end at lastId.
    const firstId = lastId - sizes.length + 1;
    for (let row = 0; row < sizes.length; row++) {
      const at = row * 4;
      this.#recent.push({
        id: firstId + row,
        text: columns[at] as string,
        receivedAt: columns[at + 1] as number,
        topic: columns[at + 2] as string,
      }, sizes[row]);
    }
    this.#lastId = lastId;
    this.#bytes += added;
    if (appended > 0) this.#notify();
  }

  /**
   * Up to `limit` records after `sink`'s cursor, oldest first.
   *
   * @example
   * ```ts
   * for (const record of spool.read("file", 500)) console.log(record.id, record.text);
   * ```
   */
  read(sink: string, limit: number): SpooledRecord[] {
    const cursor = this.#cursor(sink);
    // A sink keeping up reads what was just appended: from memory, not from the database.
    const recent = this.#recent.after(cursor, limit);
    if (recent !== undefined) return recent;
    const rows = this.#statements.readRecords.all(cursor, limit);
    return rows.map((row) => ({
      id: Number(row.id),
      text: String(row.text),
      receivedAt: Number(row.received_at),
      topic: String(row.topic),
    }));
  }

  /**
   * Moves `sink`'s cursor to `lastId` (the last record it delivered) and
   * removes the records every sink has now delivered. With
   * `options.deadLetters`, those lines are committed in the same transaction,
   * so records a sink refused are never both lost and acknowledged.
   *
   * @example
   * ```ts
   * const batch = spool.read("file", 500);
   * spool.acknowledge("file", batch[batch.length - 1].id);
   * ```
   */
  acknowledge(sink: string, lastId: number, options: AcknowledgeOptions = {}): void {
    const cursor = this.#cursor(sink);
    if (lastId > this.#lastId) {
      throw new RangeError(
        `Cannot acknowledge record ${lastId} for sink "${sink}": the spool's last record is ${this.#lastId}.`,
      );
    }
    const deadLetters = options.deadLetters ?? [];
    if (lastId <= cursor && deadLetters.length === 0) return;
    const next = Math.max(cursor, lastId);
    let added = 0;
    let removed = 0;
    let floor = this.#floor;
    this.#transaction(() => {
      this.#statements.setCursor.run(next, sink);
      for (const line of deadLetters) {
        const bytes = utf8Length(line);
        this.#statements.insertDeadLetter.run(line, bytes);
        added += bytes;
      }
      const cursors = new Map(this.#cursors).set(sink, next);
      floor = Math.min(...cursors.values());
      if (floor > this.#floor) removed = this.#removeRecords(this.#floor, floor);
      if (added !== removed) this.#statements.addBytes.run(added - removed);
    });
    this.#cursors.set(sink, next);
    this.#floor = floor;
    this.#bytes += added - removed;
    this.#notify();
  }

  /**
   * How many records `sink` has not delivered yet.
   *
   * @example
   * ```ts
   * metrics.spoolPending.set(spool.pending("file"), "file");
   * ```
   */
  pending(sink: string): number {
    // Ids are dense: rows are only inserted at the end (AUTOINCREMENT rolls back with its
    // transaction) and removed from the front, so a difference counts them in O(1).
    return this.#lastId - this.#cursor(sink);
  }

  /**
   * Appends dead-letter lines (e.g. records a sink refused for good) in one transaction.
   *
   * @example
   * ```ts
   * spool.appendDeadLetters([line]);
   * ```
   */
  appendDeadLetters(lines: readonly string[]): void {
    if (lines.length === 0) return;
    let added = 0;
    this.#transaction(() => {
      for (const line of lines) {
        const bytes = utf8Length(line);
        this.#statements.insertDeadLetter.run(line, bytes);
        added += bytes;
      }
      this.#statements.addBytes.run(added);
    });
    this.#bytes += added;
    this.#notify();
  }

  /**
   * Up to `limit` dead-letter lines, oldest first.
   *
   * @example
   * ```ts
   * const letters = spool.readDeadLetters(500);
   * ```
   */
  readDeadLetters(limit: number): SpooledDeadLetter[] {
    const rows = this.#statements.readDeadLetters.all(limit);
    return rows.map((row) => ({ id: Number(row.id), line: String(row.line) }));
  }

  /**
   * Removes every dead-letter line up to and including `lastId`, once written to the file.
   *
   * @example
   * ```ts
   * const letters = spool.readDeadLetters(500);
   * spool.removeDeadLetters(letters[letters.length - 1].id);
   * ```
   */
  removeDeadLetters(lastId: number): void {
    let removed = 0;
    this.#transaction(() => {
      removed = Number(this.#statements.sumDeadLetterBytes.get(lastId)?.bytes ?? 0);
      this.#statements.deleteDeadLetters.run(lastId);
      if (removed > 0) this.#statements.addBytes.run(-removed);
    });
    this.#bytes -= removed;
    this.#notify();
  }

  /**
   * Resolves at the next append, acknowledgement or removal, when `signal`
   * aborts, or when the spool closes; it never rejects.
   *
   * @example
   * ```ts
   * while (spool.full && !signal.aborted) await spool.changed(signal);
   * ```
   */
  changed(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted || !this.#db.isOpen) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.#waiters.delete(wake);
        signal?.removeEventListener("abort", wake);
        resolve();
      };
      this.#waiters.add(wake);
      signal?.addEventListener("abort", wake, { once: true });
    });
  }

  /**
   * Closes the database and wakes every {@linkcode Spool.changed} waiter. Idempotent.
   *
   * @example
   * ```ts
   * spool.close();
   * ```
   */
  close(): void {
    if (this.#db.isOpen) this.#db.close();
    this.#wal.close();
    this.#recent.clear();
    this.#notify();
  }

  /**
   * Resolves once every transaction committed before the call is on disk,
   * surviving power loss; rejects when the disk reports an error (those
   * commits may then be lost: do not acknowledge them). Concurrent calls
   * share one `fdatasync` of the WAL, which runs off the main thread.
   *
   * @example
   * ```ts
   * spool.append(entries);
   * await spool.sync(); // now acknowledge the messages
   * ```
   */
  sync(): Promise<void> {
    return this.#wal.sync();
  }

  #cursor(sink: string): number {
    const cursor = this.#cursors.get(sink);
    if (cursor === undefined) {
      throw new Error(
        `The spool has no cursor for sink "${sink}"; it knows ${
          this.sinks.map((name) => `"${name}"`).join(", ")
        }. Pass every sink to Spool.open.`,
      );
    }
    return cursor;
  }

  // Removes records in (from, to]; returns their bytes. O(rows removed) via the primary key.
  #removeRecords(from: number, to: number): number {
    const bytes = this.#recent.bytesBetween(from, to) ??
      Number(this.#statements.sumRecordBytes.get(from, to)?.bytes ?? 0);
    this.#statements.deleteRecords.run(from, to);
    this.#recent.dropThrough(to);
    return bytes;
  }

  // At open: removes what the remaining cursors have all passed (e.g. after a sink was dropped).
  #prune(): void {
    const present = Number(this.#statements.firstId.get()?.id ?? this.#floor + 1);
    if (present > this.#floor) return;
    let removed = 0;
    this.#transaction(() => {
      removed = this.#removeRecords(present - 1, this.#floor);
      this.#statements.addBytes.run(-removed);
    });
    this.#bytes -= removed;
  }

  #transaction(work: () => void): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      work();
      this.#db.exec("COMMIT");
      this.#wal.committed();
    } catch (error) {
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** How much of the newest records the spool keeps in memory for sinks that keep up. */
const RECENT_RECORDS_MAX_BYTES = 256 * 1024;

/**
 * The newest records, in id order with no gaps, up to a byte budget (the
 * oldest are forgotten first; the database still has them). Sinks that keep
 * up read from here, which spares a query and a copy of every text.
 */
class RecentRecords {
  readonly #maxBytes: number;
  #records: SpooledRecord[] = [];
  #sizes: number[] = [];
  /** Index of the oldest kept record; the arrays are compacted now and then. */
  #head = 0;
  #bytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  push(record: SpooledRecord, bytes: number): void {
    const last = this.#records[this.#records.length - 1];
    if (this.#head < this.#records.length && last.id + 1 !== record.id) this.clear();
    this.#records.push(record);
    this.#sizes.push(bytes);
    this.#bytes += bytes;
    while (this.#bytes > this.#maxBytes && this.#head < this.#records.length) this.#shift();
    this.#compact();
  }

  /** Up to `limit` records after id `cursor`, or undefined when they are not all here. */
  after(cursor: number, limit: number): SpooledRecord[] | undefined {
    if (this.#head >= this.#records.length) return undefined;
    const start = this.#head + (cursor + 1 - this.#records[this.#head].id);
    if (start < this.#head || start > this.#records.length) return undefined;
    return this.#records.slice(start, Math.min(start + limit, this.#records.length));
  }

  /** Bytes of the records with ids in (from, to], or undefined when not all are here. */
  bytesBetween(from: number, to: number): number | undefined {
    if (this.#head >= this.#records.length) return to <= from ? 0 : undefined;
    const first = this.#records[this.#head].id;
    if (from + 1 < first || to > this.#records[this.#records.length - 1].id) return undefined;
    let bytes = 0;
    for (let i = this.#head + (from + 1 - first); i <= this.#head + (to - first); i++) {
      bytes += this.#sizes[i];
    }
    return bytes;
  }

  /** Forgets every record with an id up to `id`. */
  dropThrough(id: number): void {
    while (this.#head < this.#records.length && this.#records[this.#head].id <= id) this.#shift();
    this.#compact();
  }

  clear(): void {
    this.#records = [];
    this.#sizes = [];
    this.#head = 0;
    this.#bytes = 0;
  }

  #shift(): void {
    this.#bytes -= this.#sizes[this.#head];
    this.#head++;
  }

  // Drops the forgotten front of the arrays once it is at least half of them: amortised O(1).
  #compact(): void {
    if (this.#head < 1024 || this.#head * 2 < this.#records.length) return;
    this.#records = this.#records.slice(this.#head);
    this.#sizes = this.#sizes.slice(this.#head);
    this.#head = 0;
  }
}

/**
 * Makes WAL commits durable: `fdatasync` on the WAL file, at most one at a
 * time, each covering every commit written before it started. SQLite writes
 * a commit's frames to the WAL at COMMIT, and in exclusive locking mode keeps
 * that file (never deletes or replaces it) until the database closes.
 */
const INODE_CHECK_INTERVAL = 64;

class WalSync {
  readonly #path: string;
  readonly #file: Deno.FsFile;
  readonly #inode: number | null;
  /** Commits written so far, and how many of them are known to be on disk. */
  #commits = 0;
  #durable = 0;
  #running?: Promise<void>;
  #next?: Promise<void>;
  #closed = false;
  #syncs = 0;

  constructor(path: string) {
    this.#path = path;
    this.#file = Deno.openSync(path, { read: true });
    this.#inode = this.#file.statSync().ino;
  }

  committed(): void {
    this.#commits++;
  }

  sync(): Promise<void> {
    const target = this.#commits;
    if (this.#durable >= target || this.#closed) return Promise.resolve();
    // A sync that is running may have started before the last commit: queue one after it.
    this.#next ??= (this.#running ?? Promise.resolve()).then(
      () => this.#start(),
      () => this.#start(),
    );
    return this.#next;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  #start(): Promise<void> {
    this.#next = undefined;
    const upTo = this.#commits;
    if (this.#durable >= upTo || this.#closed) return Promise.resolve();
    const running = this.#syncData().then(() => {
      this.#durable = Math.max(this.#durable, upTo);
    });
    this.#running = running;
    running.then(
      () => this.#running === running && (this.#running = undefined),
      () => this.#running === running && (this.#running = undefined),
    );
    return running;
  }

  async #syncData(): Promise<void> {
    // Guards the assumption above (syncing a WAL file SQLite no longer uses would prove
    // nothing), now and then: each check is one more hop through the event loop.
    if (this.#syncs++ % INODE_CHECK_INTERVAL === 0) {
      const { ino } = await Deno.stat(this.#path);
      if (ino !== this.#inode) {
        throw new Error(`The spool's WAL file ${this.#path} was replaced while the spool was open`);
      }
    }
    // Closing the database checkpoints the WAL into it and syncs it: nothing is left to do.
    if (this.#closed) return;
    await this.#file.syncData();
  }
}

interface Statements {
  readonly insertRecord: StatementSync;
  readonly insertRecords: StatementSync;
  readonly insertDeadLetter: StatementSync;
  readonly readRecords: StatementSync;
  readonly readDeadLetters: StatementSync;
  readonly setCursor: StatementSync;
  readonly sumRecordBytes: StatementSync;
  readonly deleteRecords: StatementSync;
  readonly sumDeadLetterBytes: StatementSync;
  readonly deleteDeadLetters: StatementSync;
  readonly addBytes: StatementSync;
  readonly bytes: StatementSync;
  readonly lastId: StatementSync;
  readonly firstId: StatementSync;
}

function prepareStatements(db: DatabaseSync): Statements {
  const statements: Statements = {
    insertRecord: db.prepare(
      "INSERT INTO records (text, received_at, topic, bytes) VALUES (?, ?, ?, ?)",
    ),
    insertRecords: db.prepare(
      `INSERT INTO records (text, received_at, topic, bytes) VALUES ${
        Array(INSERT_ROWS).fill("(?, ?, ?, ?)").join(", ")
      }`,
    ),
    insertDeadLetter: db.prepare("INSERT INTO dead_letters (line, bytes) VALUES (?, ?)"),
    readRecords: db.prepare(
      "SELECT id, text, received_at, topic FROM records WHERE id > ? ORDER BY id LIMIT ?",
    ),
    readDeadLetters: db.prepare("SELECT id, line FROM dead_letters ORDER BY id LIMIT ?"),
    setCursor: db.prepare("UPDATE cursors SET last_id = ? WHERE sink = ?"),
    sumRecordBytes: db.prepare(
      "SELECT COALESCE(SUM(bytes), 0) AS bytes FROM records WHERE id > ? AND id <= ?",
    ),
    deleteRecords: db.prepare("DELETE FROM records WHERE id > ? AND id <= ?"),
    sumDeadLetterBytes: db.prepare(
      "SELECT COALESCE(SUM(bytes), 0) AS bytes FROM dead_letters WHERE id <= ?",
    ),
    deleteDeadLetters: db.prepare("DELETE FROM dead_letters WHERE id <= ?"),
    addBytes: db.prepare("UPDATE totals SET value = value + ? WHERE name = 'bytes'"),
    bytes: db.prepare("SELECT value FROM totals WHERE name = 'bytes'"),
    lastId: db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'records'"),
    firstId: db.prepare("SELECT id FROM records ORDER BY id LIMIT 1"),
  };
  return statements;
}

// Makes the cursors table match the configured sinks; returns the cursors by sink.
function syncCursors(db: DatabaseSync, sinks: readonly string[]): Map<string, number> {
  const stored = new Map<string, number>();
  for (const row of db.prepare("SELECT sink, last_id FROM cursors").all()) {
    stored.set(String(row.sink), Number(row.last_id));
  }
  const dropped = [...stored.keys()].filter((name) => !sinks.includes(name));
  const added = sinks.filter((name) => !stored.has(name));
  if (dropped.length === 0 && added.length === 0) return stored;

  const first = db.prepare("SELECT id FROM records ORDER BY id LIMIT 1").get()?.id;
  const last = db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'records'").get()?.seq;
  // A new sink starts at the oldest record still pending for anyone.
  const start = first === undefined ? Number(last ?? 0) : Number(first) - 1;
  db.exec("BEGIN IMMEDIATE");
  try {
    const remove = db.prepare("DELETE FROM cursors WHERE sink = ?");
    for (const name of dropped) remove.run(name);
    const insert = db.prepare("INSERT INTO cursors (sink, last_id) VALUES (?, ?)");
    for (const name of added) insert.run(name, start);
    db.exec("COMMIT");
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
  if (dropped.length > 0) {
    logger.info("Dropped the spool cursors of sinks no longer configured: {sinks}", {
      sinks: dropped,
    });
  }
  if (added.length > 0 && stored.size > 0) {
    logger.info("New sinks start at the oldest pending record ({start}): {sinks}", {
      sinks: added,
      start: start + 1,
    });
  }
  return new Map(sinks.map((name) => [name, stored.get(name) ?? start]));
}

const encoder = new TextEncoder();
const scratch = new Uint8Array(64 * 1024);

/**
 * The UTF-8 length of `text` in bytes (a lone surrogate counts as U+FFFD, 3 bytes).
 *
 * @example
 * ```ts
 * utf8Length("µs"); // 3
 * ```
 */
export function utf8Length(text: string): number {
  // Encoding into a scratch buffer runs natively, several times faster than the loop below.
  if (text.length * 3 <= scratch.length) return encoder.encodeInto(text, scratch).written;
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else {
      // 3 bytes, or a surrogate pair: 2 UTF-16 units, 4 bytes (a lone surrogate becomes U+FFFD, 3).
      bytes += 2;
      const next = text.charCodeAt(i + 1);
      if (code >= 0xd800 && code <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) i++;
    }
  }
  return bytes;
}
