/**
 * The durable hand-off between the pipeline and the sinks: an SQLite database
 * (WAL) where each sink reads at its own pace behind its own cursor, and what
 * every sink has delivered is removed. Records are stored as chunks — one
 * row holds the JSON Lines of one burst of messages — so a burst costs one
 * row, not a row per record, while ids, cursors and byte accounting stay per
 * record. A large chunk's lines go to a file of their own beside the database
 * (src/line_files.ts); its row says where. A commit reaches the disk when
 * {@linkcode Spool.sync} resolves: the WAL and the files written are
 * `fdatasync`ed off the main thread, so one sync covers every commit made
 * while the last one ran (group commit). A sink's acknowledgement moves
 * its cursor at once but is written with the next commit, at most 100 ms
 * later: after a crash, that little is handed out again.
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { getLogger } from "@logtape/logtape";
import { DamagedLinesError, LineFiles, type LinesPlace } from "./line_files.ts";

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
  /**
   * Bytes of the newest records kept in memory as well, so sinks that keep up
   * read them without a query; default 8 MiB.
   */
  readonly memoryBytes?: number;
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
 * What a burst of messages produced, ready to store as it is: the records as
 * JSON Lines bytes, where each one came from, and the dead letters.
 *
 * @example
 * ```ts
 * const lines = new TextEncoder().encode('{"n":1}\n{"n":2}\n');
 * const chunk: SpoolChunk = {
 *   lines,
 *   ends: Uint32Array.of(8, 16),
 *   receivedAt: Float64Array.of(1000, 1000),
 *   topics: ["a/x/u/data", "a/y/u/data"],
 *   deadLetters: [],
 * };
 * ```
 */
export interface SpoolChunk {
  /** The records as UTF-8 JSON Lines: each record is one line, ended by "\n". */
  readonly lines: Uint8Array;
  /** Per record, the offset in `lines` just past its "\n". */
  readonly ends: Uint32Array;
  /** Per record, when its message was received, in ms since the epoch. */
  readonly receivedAt: Float64Array;
  /** Per record, its message's topic. */
  readonly topics: readonly string[];
  /** Dead-letter JSON lines committed with the records. */
  readonly deadLetters: readonly string[];
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
  /**
   * Position in the spool; increases with every record appended. Ids are reused only after a
   * crash, for records that had not reached the disk (see the spool's open).
   */
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

/**
 * Longest an acknowledgement's writes wait for the next transaction (the
 * intake's, usually within milliseconds) before they get one of their own.
 * A crash loses at most that much of the sinks' progress: those records are
 * delivered again, as at-least-once allows.
 */
const ACKNOWLEDGEMENT_WRITE_DELAY_MS = 100;

/** WAL pages (4 KiB each) after which a commit checkpoints them into the database. */
const WAL_CHECKPOINT_PAGES = 16_384;

/**
 * How much of the newest chunks the spool keeps in memory for sinks that keep up. Only while
 * one does: chunks no sink will read from memory go at once (see Spool.#trimMemory).
 */
const RECENT_CHUNKS_MAX_BYTES = 4 * 2 ** 20;

/**
 * Most chunks read back from the database kept in memory. Normally fewer stay: one per sink
 * that is reading one in parts (see Spool.#trimMemory).
 */
const LOADED_CHUNKS_KEPT = 4;

/**
 * Chunks with this many bytes of lines or more keep them in a line file, not in their row: a
 * chunk of 1.35 MB took 2–4 ms of the main thread to insert and commit as 330 pages of 4 KiB
 * (two writes each, and the same bytes again at the checkpoint), and 0.2–0.4 ms as one write.
 * Smaller chunks, one message each at a steady rate, stay in the row: one sync, not two.
 */
const LINE_FILE_MIN_BYTES = 64 * 1024;

const EMPTY = new Uint8Array(0);

// Bumped when the schema changes; open() upgrades an older database and refuses a newer one.
const SCHEMA_VERSION = 4;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS chunks (
  first_id INTEGER PRIMARY KEY,
  last_id INTEGER NOT NULL,
  lines BLOB NOT NULL,
  ends BLOB NOT NULL,
  received_at BLOB NOT NULL,
  topics TEXT NOT NULL,
  sizes BLOB NOT NULL,
  bytes INTEGER NOT NULL,
  -- Set when the lines are in a line file (and the lines column is empty): its number, where
  -- they start, their CRC-32.
  file INTEGER,
  file_offset INTEGER,
  crc INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_in_files ON chunks (file, last_id) WHERE file IS NOT NULL;
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  line TEXT NOT NULL,
  bytes INTEGER NOT NULL
);
-- The sinks' cursors (kind 'cursor', name: the sink, value: the last record it delivered) and the
-- spool's totals (kind 'total': 'bytes', 'last_id', and 'synced_id', the last record known to be
-- on disk, line files included) share a table, so a commit that moves both rewrites one page of
-- them, not two.
CREATE TABLE IF NOT EXISTS progress (
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  value INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
) WITHOUT ROWID;
INSERT OR IGNORE INTO progress (kind, name, value)
  VALUES ('total', 'bytes', 0), ('total', 'last_id', 0), ('total', 'synced_id', 0);
`;

/** Schemas 2 and 3 kept every chunk's lines in its row. */
const LINE_FILES_FROM_SCHEMA_3 = `
ALTER TABLE chunks ADD COLUMN file INTEGER;
ALTER TABLE chunks ADD COLUMN file_offset INTEGER;
ALTER TABLE chunks ADD COLUMN crc INTEGER;
`;

/** A spool of a schema this version does not know: no hint about folders or permissions helps. */
class NewerSchemaError extends Error {}

/** Schemas 1 and 2 kept the cursors and the totals in tables of their own. */
const PROGRESS_FROM_SCHEMA_2 = `
INSERT INTO progress (kind, name, value) SELECT 'cursor', sink, last_id FROM cursors;
INSERT OR REPLACE INTO progress (kind, name, value) SELECT 'total', name, value FROM totals;
DROP TABLE cursors;
DROP TABLE totals;
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
  readonly #lineFiles: LineFiles;
  /** Per line file, the last record of its last chunk: the file goes once every sink is past it. */
  readonly #fileEnds: Map<number, number>;
  /** Line files whose chunks a commit deleted; each goes once that commit is on disk. */
  #removals: { readonly commit: number; readonly files: readonly number[] }[] = [];
  /** The highest id a chunk deletion of the open transaction reached. */
  #deletedThrough?: number;
  /** The last record known to be on disk, and the value the database has. */
  #syncedId: number;
  #storedSyncedId: number;
  readonly #recent: RecentChunks;
  readonly #loaded = new Map<number, Chunk>();
  /** Per sink, the last record of the batch it read and has not acknowledged yet. */
  readonly #batchEnds = new Map<string, number>();
  #bytes: number;
  #lastId: number;
  /**
   * False once a read found no dead letters, until one is added: the
   * dead-letter writer reads at every change of the spool, and most find none.
   */
  #mayHoldDeadLetters = true;
  /**
   * What acknowledgements changed and the database does not have yet: the
   * sinks whose cursors moved, the chunks to delete, the bytes they freed.
   * Written by the next transaction, so that a burst's acknowledgement costs
   * no commit of its own (each commit rewrites whole pages: the chunks
   * table's and the progress table's).
   */
  #unwritten?: UnwrittenAcknowledgements;
  #unwrittenTimer?: ReturnType<typeof setTimeout>;
  // Every record with an id at or below this has been delivered by every sink; chunks wholly
  // below it are removed.
  #floor: number;

  private constructor(db: DatabaseSync, options: SpoolOptions, state: OpenedState) {
    const { cursors, wal, lineFiles, fileEnds } = state;
    this.#db = db;
    this.#recent = new RecentChunks(options.memoryBytes ?? RECENT_CHUNKS_MAX_BYTES, {
      // A slow sink reads an evicted chunk back from the database; unless a batch in a sink's
      // hands holds it, its bytes go now, not at the next full garbage collection.
      evicted: (chunk) => {
        if (!this.#lent(chunk)) release(chunk);
      },
    });
    this.#wal = wal;
    this.#lineFiles = lineFiles;
    this.#fileEnds = fileEnds;
    this.#maxBytes = options.maxBytes;
    this.#cursors = cursors;
    this.#statements = prepareStatements(db);
    this.#bytes = Number(this.#statements.total.get("bytes")?.value ?? 0);
    this.#lastId = Number(this.#statements.total.get("last_id")?.value ?? 0);
    this.#syncedId = this.#storedSyncedId = Number(
      this.#statements.total.get("synced_id")?.value ?? 0,
    );
    this.#floor = Math.min(...cursors.values());
  }

  /**
   * Opens (creating if needed) the spool at `options.path`, adds a cursor at
   * the oldest pending record for each sink it has not seen, and drops the
   * cursors of sinks no longer configured, so their rows can be pruned. A
   * spool written by an earlier version is upgraded in place. Throws an
   * error naming the path when the database cannot be opened.
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
    let lineFiles: LineFiles | undefined;
    try {
      db = new DatabaseSync(path);
      const version = Number(db.prepare("PRAGMA user_version").get()?.user_version ?? 0);
      if (version > SCHEMA_VERSION) {
        throw new NewerSchemaError(
          `it was written by a newer gridrelay (schema ${version}, this one knows ${SCHEMA_VERSION}). Run that version, or, once it has delivered everything, move the spool files away`,
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
      db.exec("BEGIN IMMEDIATE");
      if (version === 2 || version === 3) db.exec(LINE_FILES_FROM_SCHEMA_3);
      db.exec(SCHEMA);
      if (version === 1 || version === 2) db.exec(PROGRESS_FROM_SCHEMA_2);
      if (version === 1) upgradeFromRecordRows(db);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}; COMMIT;`);
      if (version !== 0 && version < SCHEMA_VERSION) {
        logger.info(
          "Upgraded the spool {path} from schema {from} to {to}; older gridrelay versions can no longer open it",
          { path, from: version, to: SCHEMA_VERSION },
        );
      }
      lineFiles = LineFiles.open(`${path}-lines`);
      dropUnsyncedTail(db, lineFiles);
      const { cursors, previousFloor } = syncCursors(db, sinks);
      wal = new WalSync(`${path}-wal`, lineFiles);
      const fileEnds = new Map<number, number>();
      for (const row of db.prepare(FILE_ENDS).all()) {
        fileEnds.set(Number(row.file), Number(row.last_id));
      }
      // Files no chunk points at: their chunks' deletion was committed, then the worker stopped
      // before it deleted them. The WAL is synced first, so the deletion is surely on disk.
      const orphans = lineFiles.numbers.filter((number) => !fileEnds.has(number));
      if (orphans.length > 0) {
        wal.syncNow();
        lineFiles.remove(orphans);
      }
      const spool = new Spool(db, options, { cursors, wal, lineFiles, fileEnds });
      spool.#prune(previousFloor);
      return spool;
    } catch (error) {
      if (db?.isTransaction) db.exec("ROLLBACK");
      if (db?.isOpen) db.close();
      wal?.close();
      lineFiles?.close();
      const message = error instanceof Error ? error.message : String(error);
      // A newer schema or lines the disk lost: no hint about folders or permissions helps.
      const hint = error instanceof NewerSchemaError ||
          (error instanceof Error && error.cause instanceof DamagedLinesError)
        ? ""
        : /locked|busy/i.test(message)
        ? " Another gridrelay worker seems to use the same DATA_DIR; give each worker its own."
        : " Check that its folder exists and that the worker may read and write it (--allow-read and --allow-write for that folder).";
      throw new Error(`Cannot open the spool database ${path}: ${message}.${hint}`, {
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

  /**
   * Set once syncing the spool to disk has failed: from then on every
   * {@linkcode Spool.sync} fails with it, until a restart.
   */
  get syncFailure(): Error | undefined {
    return this.#wal.failure;
  }

  /** The names of the sinks with a cursor. */
  get sinks(): readonly string[] {
    return [...this.#cursors.keys()];
  }

  /**
   * Appends the records and dead letters of `entries` in one transaction.
   * The convenient form of {@linkcode Spool.appendChunks}, for record texts.
   *
   * @example
   * ```ts
   * spool.append([{ records: [text], deadLetters: [], receivedAt: Date.now(), topic: "a/x/u/data" }]);
   * ```
   */
  append(entries: readonly SpoolEntry[]): void {
    const texts: string[] = [];
    const receivedAt: number[] = [];
    const topics: string[] = [];
    const deadLetters: string[] = [];
    for (const entry of entries) {
      for (const text of entry.records) {
        if (typeof text !== "string") {
          throw new TypeError(`A spooled record must be JSON text, got ${typeof text}`);
        }
        texts.push(text);
        receivedAt.push(entry.receivedAt);
        topics.push(entry.topic);
      }
      deadLetters.push(...entry.deadLetters);
    }
    const { lines, ends } = encodeLines(texts);
    this.appendChunks([{
      lines,
      ends,
      receivedAt: Float64Array.from(receivedAt),
      topics,
      deadLetters,
    }]);
  }

  /**
   * Appends `chunks` in one transaction, so either all of them are committed
   * when it returns or it throws and none are; they are durable once a later
   * {@linkcode Spool.sync} resolves. Records get the next ids in order. It
   * never refuses for size: pausing the intake on {@linkcode Spool.full} is
   * the caller's job. The spool takes each chunk's `lines` buffer (the whole
   * `ArrayBuffer`), not a copy: do not change or reuse it afterwards; it is
   * released once every sink has delivered the chunk's records.
   *
   * @example
   * ```ts
   * spool.appendChunks([chunk]);
   * await spool.sync(); // durable: acknowledge the messages
   * ```
   */
  appendChunks(chunks: readonly SpoolChunk[]): void {
    let lastId = this.#lastId;
    let added = 0;
    let changed = false;
    const stored: Chunk[] = [];
    this.#transaction(() => {
      const { insertChunk, insertDeadLetter, setTotal } = this.#statements;
      for (const chunk of chunks) {
        const count = checkChunk(chunk);
        if (count > 0) {
          const sizes = recordSizes(chunk);
          const bytes = sizes[count];
          // Written before the row that points at them; if the transaction fails, they are bytes
          // no row points at, gone with their file.
          const place = chunk.lines.byteLength >= LINE_FILE_MIN_BYTES
            ? this.#lineFiles.append(chunk.lines)
            : undefined;
          insertChunk.run(
            lastId + 1,
            lastId + count,
            place === undefined ? chunk.lines : EMPTY,
            bytesOf(chunk.ends),
            bytesOf(chunk.receivedAt),
            JSON.stringify(chunk.topics),
            bytesOf(sizes),
            bytes,
            place?.file ?? null,
            place?.offset ?? null,
            place?.crc ?? null,
          );
          // Now, not after the commit: a deletion in this transaction must see the file in use.
          // (If the transaction fails, the end is too late, which only keeps the file longer.)
          if (place !== undefined) this.#fileEnds.set(place.file, lastId + count);
          stored.push({ ...chunk, firstId: lastId + 1, count, sizes });
          lastId += count;
          added += bytes;
        }
        for (const line of chunk.deadLetters) {
          const bytes = utf8Length(line);
          insertDeadLetter.run(line, bytes);
          this.#mayHoldDeadLetters = true;
          added += bytes;
        }
        changed ||= count > 0 || chunk.deadLetters.length > 0;
      }
      if (added > 0) this.#statements.addBytes.run(added);
      if (lastId !== this.#lastId) setTotal.run(lastId, "last_id");
    });
    for (const chunk of stored) this.#recent.push(chunk);
    this.#lastId = lastId;
    this.#trimMemory();
    this.#bytes += added;
    if (changed) this.#notify();
  }

  /**
   * Up to `limit` records after `sink`'s cursor, oldest first, as one batch
   * (empty when the sink has caught up).
   *
   * @example
   * ```ts
   * const batch = spool.readBatch("file", 500);
   * if (batch.length > 0) await file.write(batch.lines());
   * ```
   */
  readBatch(sink: string, limit: number): RecordBatch {
    const cursor = this.#cursor(sink);
    const last = Math.min(this.#lastId, cursor + Math.max(0, Math.floor(limit)));
    const segments: Segment[] = [];
    for (let id = cursor + 1; id <= last;) {
      const chunk = this.#chunkWith(id);
      const start = id - chunk.firstId;
      const end = Math.min(chunk.count, last - chunk.firstId + 1);
      segments.push({ chunk, start, end });
      id = chunk.firstId + end;
    }
    if (last > cursor) this.#batchEnds.set(sink, last);
    return new RecordBatch(cursor + 1, segments);
  }

  /**
   * Up to `limit` records after `sink`'s cursor, oldest first, one object each.
   *
   * @example
   * ```ts
   * for (const record of spool.read("file", 500)) console.log(record.id, record.text);
   * ```
   */
  read(sink: string, limit: number): SpooledRecord[] {
    const batch = this.readBatch(sink, limit);
    const records: SpooledRecord[] = [];
    for (let index = 0; index < batch.length; index++) {
      records.push({
        id: batch.firstId + index,
        text: batch.text(index),
        receivedAt: batch.receivedAt(index),
        topic: batch.topic(index),
      });
    }
    return records;
  }

  /**
   * Moves `sink`'s cursor to `lastId` (the last record it delivered) and
   * removes the records every sink has now delivered. The database has it
   * with the next commit (see {@linkcode ACKNOWLEDGEMENT_WRITE_DELAY_MS}).
   * With `options.deadLetters`, those lines are committed at once, in the
   * transaction that moves the cursor, so records a sink refused are never
   * both lost and acknowledged.
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
    let floor = next;
    for (const [name, last] of this.#cursors) if (name !== sink && last < floor) floor = last;
    // Reads only: what the move frees. The writes wait for the next transaction.
    const freed = floor > this.#floor ? this.#bytesThrough(this.#floor, floor) : NOTHING_FREED;
    let added = 0;
    if (deadLetters.length > 0) {
      // Refused records go to the dead letters in the transaction that moves the cursor past them.
      this.#transaction(() => {
        this.#statements.setCursor.run(next, sink);
        for (const line of deadLetters) {
          const bytes = utf8Length(line);
          this.#statements.insertDeadLetter.run(line, bytes);
          this.#mayHoldDeadLetters = true;
          added += bytes;
        }
        if (freed.deletes) this.#deleteChunks(floor);
        if (added !== freed.bytes) this.#statements.addBytes.run(added - freed.bytes);
      });
    } else {
      const unwritten = this.#unwritten ??= {
        sinks: new Set(),
        deleteThrough: undefined,
        bytes: 0,
      };
      unwritten.sinks.add(sink);
      if (freed.deletes) unwritten.deleteThrough = floor;
      unwritten.bytes -= freed.bytes;
      this.#unwrittenTimer ??= setTimeout(
        () => this.#writeUnwritten(),
        ACKNOWLEDGEMENT_WRITE_DELAY_MS,
      );
    }
    this.#cursors.set(sink, next);
    if ((this.#batchEnds.get(sink) ?? 0) <= next) this.#batchEnds.delete(sink);
    if (floor > this.#floor) this.#forgetThrough(floor);
    this.#floor = floor;
    this.#trimMemory();
    this.#bytes += added - freed.bytes;
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
    // Ids are dense: each append takes the next ones, so a difference counts them in O(1).
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
        this.#mayHoldDeadLetters = true;
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
    if (!this.#mayHoldDeadLetters) return [];
    const rows = this.#statements.readDeadLetters.all(limit);
    if (rows.length === 0) this.#mayHoldDeadLetters = false;
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
    this.#writeUnwritten();
    if (this.#db.isOpen) {
      // Closing the database syncs what is in it; the line files are synced here, so that a
      // sync() still waiting resolves only when that is true.
      try {
        this.#lineFiles.syncNow();
      } catch (error) {
        this.#wal.fail(error);
        logger.error(
          "Could not sync the spool's line files to disk while closing: {error}; what was not acknowledged stays so, and the broker sends it again",
          { error },
        );
      }
      this.#db.close();
    }
    this.#wal.close();
    // Closing the database checkpointed it, and so put the deletions on disk: their files can go.
    this.#lineFiles.remove(this.#removals.flatMap((removal) => removal.files));
    this.#removals = [];
    this.#lineFiles.close();
    this.#recent.clear();
    this.#loaded.clear();
    this.#notify();
  }

  /**
   * Resolves once every transaction committed before the call is on disk,
   * surviving power loss; rejects when the disk reports an error (those
   * commits may then be lost: do not acknowledge them). Concurrent calls
   * share one `fdatasync` of the WAL (and of each line file written), which
   * runs off the main thread.
   *
   * @example
   * ```ts
   * spool.append(entries);
   * await spool.sync(); // now acknowledge the messages
   * ```
   */
  sync(): Promise<void> {
    const commits = this.#wal.commits;
    const lastId = this.#lastId;
    return this.#wal.sync().then(() => this.#synced(commits, lastId));
  }

  /** Commits up to `commits`, and so records up to `lastId`, are on disk. */
  #synced(commits: number, lastId: number): void {
    if (!this.#db.isOpen) return;
    this.#syncedId = Math.max(this.#syncedId, lastId);
    const due = this.#removals.filter((removal) => removal.commit <= commits);
    if (due.length === 0) return;
    this.#removals = this.#removals.filter((removal) => removal.commit > commits);
    this.#lineFiles.remove(due.flatMap((removal) => removal.files));
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

  /** The chunk holding record `id`, when it is in memory. */
  #inMemory(id: number): Chunk | undefined {
    const recent = this.#recent.find(id);
    if (recent !== undefined) return recent;
    for (const chunk of this.#loaded.values()) {
      if (chunk.firstId <= id && id < chunk.firstId + chunk.count) return chunk;
    }
    return undefined;
  }

  /** The chunk holding record `id` (which must be pending): from memory, else from the database. */
  #chunkWith(id: number): Chunk {
    const inMemory = this.#inMemory(id);
    if (inMemory !== undefined) return inMemory;
    const row = this.#statements.chunkWith.get(id);
    if (row === undefined || Number(row.last_id) < id) {
      throw new Error(`The spool has lost record ${id}: no chunk holds it`);
    }
    const chunk = chunkOf(row, this.#lineFiles);
    this.#loaded.set(chunk.firstId, chunk);
    if (this.#loaded.size > LOADED_CHUNKS_KEPT) {
      this.#loaded.delete(this.#loaded.keys().next().value!);
    }
    return chunk;
  }

  /**
   * Removes the chunks whose records all lie at or below `to`, and returns the
   * bytes of the records in (from, to] — in part of a chunk, too, since bytes
   * count pending records. O(chunks touched).
   */
  #removeThrough(from: number, to: number): number {
    const freed = this.#bytesThrough(from, to);
    if (freed.deletes) this.#deleteChunks(to);
    return freed.bytes;
  }

  /** Deletes the chunks wholly at or below `through`, in the open transaction. */
  #deleteChunks(through: number): void {
    this.#statements.deleteChunks.run(through);
    this.#deletedThrough = Math.max(this.#deletedThrough ?? 0, through);
  }

  /**
   * After a commit that deleted chunks: the line files every sink is now past go once that
   * commit is on disk, with the next sync (each message brings one) or at close. The file
   * being written is retired at once, so no new chunk goes to a file about to be deleted.
   */
  #queueRemovals(commit: number, deletedThrough: number): void {
    const files: number[] = [];
    for (const [file, lastId] of this.#fileEnds) {
      if (lastId > deletedThrough) continue;
      files.push(file);
      this.#fileEnds.delete(file);
      this.#lineFiles.retire(file);
    }
    if (files.length === 0) return;
    this.#removals.push({ commit, files });
  }

  /**
   * The bytes of the records in (from, to], and whether chunks wholly at or
   * below `to` are then left to delete. Reads only.
   */
  #bytesThrough(from: number, to: number): Freed {
    // The common step, a sink moving on inside the chunk it reads from memory: no SQL. The
    // queries below cost about 0.3 ms a call in a profile (`bytes` and `sizes` come after the
    // chunk's blob in the row), and at WEBHOOK_BATCH_SIZE=1 they ran per request.
    const chunk = this.#inMemory(to);
    if (chunk !== undefined && chunk.firstId <= from + 1) {
      const bytes = chunk.sizes[to - chunk.firstId + 1] - chunk.sizes[from - chunk.firstId + 1];
      // The chunks before it went when the floor passed them; it goes once the floor passes it.
      return { bytes, deletes: to === chunk.firstId + chunk.count - 1 };
    }
    let bytes = this.#recent.bytesBetween(from, to);
    if (bytes === undefined) {
      bytes = 0;
      for (const span of this.#statements.chunkSpans.all(from, to)) {
        const firstId = Number(span.first_id);
        const lastId = Number(span.last_id);
        if (firstId > from && lastId <= to) {
          bytes += Number(span.bytes);
        } else {
          // A chunk cut by `from` or `to`: its per-record sizes tell.
          const { sizes } = this.#chunkWith(firstId);
          bytes += sizes[Math.min(to, lastId) - firstId + 1] -
            sizes[Math.max(from, firstId - 1) - firstId + 1];
        }
      }
    }
    return { bytes, deletes: true };
  }

  /** Writes the acknowledgements that waited, in a transaction of their own (see #unwritten). */
  #writeUnwritten(): void {
    clearTimeout(this.#unwrittenTimer);
    this.#unwrittenTimer = undefined;
    if (this.#unwritten === undefined || !this.#db.isOpen) return;
    try {
      this.#transaction(() => {});
    } catch (error) {
      // Kept: the next transaction writes them, or fails for its own caller, who reports it.
      logger.warn(
        "Could not write the sinks' progress to the spool: {error}; trying again with the next write",
        { error },
      );
    }
  }

  /** Whether a batch a sink has read and not acknowledged holds records of `chunk`. */
  #lent(chunk: Chunk): boolean {
    for (const [sink, last] of this.#batchEnds) {
      if (chunk.firstId <= last && chunk.firstId + chunk.count - 1 > this.#cursor(sink)) {
        return true;
      }
    }
    return false;
  }

  #forgetThrough(floor: number): void {
    this.#recent.dropThrough(floor);
    for (const [firstId, chunk] of this.#loaded) {
      if (firstId + chunk.count - 1 > floor) continue;
      this.#loaded.delete(firstId);
      // Read back from the database for a sink that fell behind, and now every sink has it:
      // freed at once, as RecentChunks.dropThrough does.
      release(chunk);
    }
  }

  /**
   * Frees what no sink will read from memory: the recent chunks wholly before the first sink
   * reading among them (all but the newest when every sink is behind them, reading back from
   * the database: a sink that lags a drain would reach them only after they were pushed out),
   * and chunks read back that hold no sink's next record (a sink reads forward, so it is done
   * with them). Chunks a sink's unacknowledged batch holds stay.
   */
  #trimMemory(): void {
    const oldestRecent = this.#recent.firstId;
    let firstReader = Infinity;
    for (const cursor of this.#cursors.values()) {
      if (oldestRecent !== undefined && cursor + 1 >= oldestRecent) {
        firstReader = Math.min(firstReader, cursor + 1);
      }
    }
    this.#recent.pushOutBefore(firstReader, (chunk) => this.#lent(chunk));
    for (const [firstId, chunk] of this.#loaded) {
      if (this.#lent(chunk)) continue;
      let next = false;
      for (const cursor of this.#cursors.values()) {
        next ||= firstId <= cursor + 1 && cursor + 1 < firstId + chunk.count;
      }
      if (next) continue;
      this.#loaded.delete(firstId);
      release(chunk);
    }
  }

  // At open: removes what the remaining cursors have all passed since `previousFloor`, the
  // lowest cursor before sinks were dropped.
  #prune(previousFloor: number): void {
    if (previousFloor >= this.#floor) return;
    let removed = 0;
    this.#transaction(() => {
      removed = this.#removeThrough(previousFloor, this.#floor);
      if (removed > 0) this.#statements.addBytes.run(-removed);
    });
    this.#bytes -= removed;
    this.#forgetThrough(this.#floor);
  }

  /** Runs `work` in a transaction, after the acknowledgements that waited for one. */
  #transaction(work: () => void): void {
    const unwritten = this.#unwritten;
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      if (unwritten !== undefined) {
        const { setCursor, addBytes } = this.#statements;
        for (const sink of unwritten.sinks) setCursor.run(this.#cursors.get(sink)!, sink);
        if (unwritten.deleteThrough !== undefined) this.#deleteChunks(unwritten.deleteThrough);
        if (unwritten.bytes !== 0) addBytes.run(unwritten.bytes);
      }
      const syncedId = this.#syncedId;
      if (syncedId > this.#storedSyncedId) this.#statements.setTotal.run(syncedId, "synced_id");
      work();
      this.#db.exec("COMMIT");
      const commit = this.#wal.committed();
      this.#storedSyncedId = syncedId;
      if (unwritten !== undefined) {
        this.#unwritten = undefined;
        clearTimeout(this.#unwrittenTimer);
        this.#unwrittenTimer = undefined;
      }
      const deletedThrough = this.#deletedThrough;
      this.#deletedThrough = undefined;
      if (deletedThrough !== undefined) this.#queueRemovals(commit, deletedThrough);
    } catch (error) {
      this.#deletedThrough = undefined;
      if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  #notify(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** What moving the floor frees: the records' bytes, and whether whole chunks are left to delete. */
interface Freed {
  readonly bytes: number;
  readonly deletes: boolean;
}

const NOTHING_FREED: Freed = { bytes: 0, deletes: false };

/** Acknowledgements the database does not have yet (see Spool.#unwritten). */
interface UnwrittenAcknowledgements {
  /** Sinks whose cursors moved; their values are the spool's cursors. */
  readonly sinks: Set<string>;
  /** Delete the chunks wholly at or below this. */
  deleteThrough: number | undefined;
  /** Add this to the totals' bytes (negative: freed). */
  bytes: number;
}

/** A stored chunk: a {@linkcode SpoolChunk} with its place in the id sequence. */
interface Chunk {
  readonly firstId: number;
  readonly count: number;
  readonly lines: Uint8Array;
  readonly ends: Uint32Array;
  readonly receivedAt: Float64Array;
  readonly topics: readonly string[];
  /** Bytes of the records before each index (sizes[count] is the chunk's total). */
  readonly sizes: Float64Array;
}

/** Part of a chunk: records [start, end) by index in it. */
interface Segment {
  readonly chunk: Chunk;
  readonly start: number;
  readonly end: number;
}

const decoder = new TextDecoder();

/**
 * Consecutive records read from the spool for one sink: their JSON Lines
 * bytes as stored, and each record's text, receipt time and topic by index.
 *
 * @example
 * ```ts
 * const batch = spool.readBatch("webhook", 100);
 * for (let index = 0; index < batch.length; index++) console.log(batch.id(index), batch.text(index));
 * ```
 */
export class RecordBatch {
  /** The id of the first record; the others follow without gaps. */
  readonly firstId: number;
  /** How many records. */
  readonly length: number;
  readonly #segments: readonly Segment[];

  /** A batch of the records in `segments`, the first of which has id `firstId`. */
  constructor(firstId: number, segments: readonly Segment[]) {
    this.firstId = firstId;
    this.#segments = segments;
    this.length = segments.reduce((sum, segment) => sum + segment.end - segment.start, 0);
  }

  /** The id of the last record (`firstId - 1` when empty). */
  get lastId(): number {
    return this.firstId + this.length - 1;
  }

  /** Whether {@linkcode RecordBatch.lines} gives a copy (the batch spans chunks), not a view. */
  get linesCopied(): boolean {
    return this.#segments.length > 1;
  }

  /** The records as UTF-8 JSON Lines, each ended by "\n": a view of the stored bytes when it can. */
  lines(): Uint8Array {
    const ranges = this.#segments.map(({ chunk, start, end }) =>
      chunk.lines.subarray(start === 0 ? 0 : chunk.ends[start - 1], chunk.ends[end - 1])
    );
    if (ranges.length === 1) return ranges[0];
    const joined = new Uint8Array(ranges.reduce((sum, range) => sum + range.length, 0));
    let offset = 0;
    for (const range of ranges) {
      joined.set(range, offset);
      offset += range.length;
    }
    return joined;
  }

  /** The id of the record at `index`. */
  id(index: number): number {
    return this.firstId + index;
  }

  /** Every record's JSON text, in order. */
  texts(): string[] {
    const texts: string[] = [];
    for (const { chunk, start, end } of this.#segments) {
      for (let at = start; at < end; at++) {
        texts.push(
          decoder.decode(
            chunk.lines.subarray(at === 0 ? 0 : chunk.ends[at - 1], chunk.ends[at] - 1),
          ),
        );
      }
    }
    return texts;
  }

  /** The JSON text of the record at `index`, without its "\n". */
  text(index: number): string {
    const [chunk, at] = this.#locate(index);
    return decoder.decode(
      chunk.lines.subarray(at === 0 ? 0 : chunk.ends[at - 1], chunk.ends[at] - 1),
    );
  }

  /** When the message of the record at `index` was received, in ms since the epoch. */
  receivedAt(index: number): number {
    const [chunk, at] = this.#locate(index);
    return chunk.receivedAt[at];
  }

  /** The topic of the message of the record at `index`. */
  topic(index: number): string {
    const [chunk, at] = this.#locate(index);
    return chunk.topics[at];
  }

  #locate(index: number): [Chunk, number] {
    if (!(index >= 0 && index < this.length)) {
      throw new RangeError(`Record index ${index} is outside this batch of ${this.length}`);
    }
    for (const { chunk, start, end } of this.#segments) {
      if (index < end - start) return [chunk, start + index];
      index -= end - start;
    }
    throw new RangeError("unreachable");
  }
}

/**
 * The newest chunks, in id order with no gaps, up to a byte budget (the
 * oldest are forgotten first; the database still has them). Sinks that keep
 * up read from here, which spares a query and a copy of every record.
 */
class RecentChunks {
  readonly #maxBytes: number;
  readonly #evicted: (chunk: Chunk) => void;
  #chunks: Chunk[] = [];
  #bytes = 0;

  constructor(maxBytes: number, options: { evicted: (chunk: Chunk) => void }) {
    this.#maxBytes = maxBytes;
    this.#evicted = options.evicted;
  }

  push(chunk: Chunk): void {
    const last = this.#chunks[this.#chunks.length - 1];
    if (last !== undefined && last.firstId + last.count !== chunk.firstId) this.clear();
    this.#chunks.push(chunk);
    this.#bytes += chunk.lines.byteLength;
    while (this.#bytes > this.#maxBytes && this.#chunks.length > 1) this.#evicted(this.#shift());
  }

  /** The first record id held here, if any. */
  get firstId(): number | undefined {
    return this.#chunks[0]?.firstId;
  }

  /**
   * Pushes out the chunks whose records all come before `id`, oldest first, up to the first
   * one `held` says a reader still has; the newest chunk always stays.
   */
  pushOutBefore(id: number, held: (chunk: Chunk) => boolean): void {
    while (this.#chunks.length > 1) {
      const first = this.#chunks[0];
      if (first.firstId + first.count > id || held(first)) break;
      this.#evicted(this.#shift());
    }
  }

  /** The chunk holding record `id`, when it is here. */
  find(id: number): Chunk | undefined {
    const chunks = this.#chunks;
    if (chunks.length === 0 || id < chunks[0].firstId) return undefined;
    // Readers are usually near the front (oldest pending) or the back (just appended).
    for (let i = 0; i < chunks.length; i++) {
      const chunk = chunks[i];
      if (id < chunk.firstId + chunk.count) return id >= chunk.firstId ? chunk : undefined;
    }
    return undefined;
  }

  /** Bytes of the records with ids in (from, to], or undefined when not all are here. */
  bytesBetween(from: number, to: number): number | undefined {
    if (to <= from) return 0;
    const chunks = this.#chunks;
    if (chunks.length === 0 || from + 1 < chunks[0].firstId) return undefined;
    const last = chunks[chunks.length - 1];
    if (to > last.firstId + last.count - 1) return undefined;
    let bytes = 0;
    for (const chunk of chunks) {
      const lastId = chunk.firstId + chunk.count - 1;
      if (lastId <= from) continue;
      if (chunk.firstId > to) break;
      const start = Math.max(from + 1, chunk.firstId) - chunk.firstId;
      const end = Math.min(to, lastId) - chunk.firstId + 1;
      bytes += chunk.sizes[end] - chunk.sizes[start];
    }
    return bytes;
  }

  /** Forgets, and frees, every chunk whose records all have ids up to `id` (every sink has them). */
  dropThrough(id: number): void {
    while (this.#chunks.length > 0) {
      const first = this.#chunks[0];
      if (first.firstId + first.count - 1 > id) break;
      // Every sink is done with it (sinks give the bytes back when a write settles, see
      // Sink.writeLines): freed now, not at the next full garbage collection, which a drain
      // would otherwise wait for with tens of megabytes of such chunks.
      release(this.#shift());
    }
  }

  clear(): void {
    this.#chunks = [];
    this.#bytes = 0;
  }

  #shift(): Chunk {
    const chunk = this.#chunks.shift()!;
    this.#bytes -= chunk.lines.byteLength;
    return chunk;
  }
}

/** Frees a chunk's JSON Lines bytes now, rather than at the next full garbage collection. */
function release(chunk: Chunk): void {
  (chunk.lines.buffer as ArrayBuffer).transfer(0);
}

const encoder = new TextEncoder();

/**
 * Record texts as JSON Lines bytes and each line's end, for {@linkcode SpoolChunk}.
 *
 * @example
 * ```ts
 * const { lines, ends } = encodeLines(['{"n":1}', '{"n":2}']); // ends: [8, 16]
 * ```
 */
export function encodeLines(texts: readonly string[]): { lines: Uint8Array; ends: Uint32Array } {
  let most = 0;
  for (const text of texts) most += text.length * 3 + 1;
  const buffer = new Uint8Array(most);
  const ends = new Uint32Array(texts.length);
  let offset = 0;
  for (let i = 0; i < texts.length; i++) {
    offset += encoder.encodeInto(texts[i], buffer.subarray(offset)).written;
    buffer[offset++] = 0x0a;
    ends[i] = offset;
  }
  return { lines: buffer.slice(0, offset), ends };
}

/** Checks that a chunk's parts agree; returns its record count. */
function checkChunk(chunk: SpoolChunk): number {
  const count = chunk.ends.length;
  if (
    chunk.receivedAt.length !== count || chunk.topics.length !== count ||
    (count > 0 && chunk.ends[count - 1] !== chunk.lines.byteLength)
  ) {
    throw new RangeError(
      `A spool chunk's parts disagree: ${count} line ends (the last at ${
        chunk.ends[count - 1]
      }), ${chunk.receivedAt.length} receipt times, ${chunk.topics.length} topics, ${chunk.lines.byteLength} bytes of lines`,
    );
  }
  return count;
}

/** Cumulative bytes of a chunk's records: each is its text (without "\n") plus its topic, UTF-8. */
function recordSizes(chunk: SpoolChunk): Float64Array {
  const { ends, topics } = chunk;
  const sizes = new Float64Array(ends.length + 1);
  let topic = "";
  let topicBytes = 0;
  for (let i = 0; i < ends.length; i++) {
    if (topics[i] !== topic) {
      topic = topics[i];
      topicBytes = utf8Length(topic);
    }
    const lineBytes = ends[i] - (i === 0 ? 0 : ends[i - 1]) - 1;
    sizes[i + 1] = sizes[i] + lineBytes + topicBytes;
  }
  return sizes;
}

/** The bytes of a typed array, for a BLOB column (native byte order: little-endian everywhere Deno runs). */
function bytesOf(array: Uint32Array | Float64Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

function chunkOf(row: Record<string, unknown>, lineFiles: LineFiles): Chunk {
  const firstId = Number(row.first_id);
  const count = Number(row.last_id) - firstId + 1;
  const ends = typed(row.ends as Uint8Array, Uint32Array);
  return {
    firstId,
    count,
    lines: row.file === null ? row.lines as Uint8Array : linesInFile(row, ends, lineFiles),
    ends,
    receivedAt: typed(row.received_at as Uint8Array, Float64Array),
    topics: JSON.parse(String(row.topics)),
    sizes: typed(row.sizes as Uint8Array, Float64Array),
  };
}

/** The lines of a chunk whose row points into a line file, read back and checked. */
function linesInFile(
  row: Record<string, unknown>,
  ends: Uint32Array,
  lineFiles: LineFiles,
): Uint8Array {
  try {
    return lineFiles.read(placeOf(row), ends[ends.length - 1]);
  } catch (error) {
    if (!(error instanceof DamagedLinesError)) throw error;
    throw new Error(
      `The spool cannot read back records ${row.first_id}–${row.last_id}: ${error.message}. They were on disk once (synced before their messages were acknowledged), so the disk has lost or changed them; check it (dmesg, SMART). These records are lost unless the broker still has them.`,
      { cause: error },
    );
  }
}

function placeOf(row: Record<string, unknown>): LinesPlace {
  return { file: Number(row.file), offset: Number(row.file_offset), crc: Number(row.crc) };
}

/**
 * After a crash, the newest chunks in line files may not all be on disk: the WAL can reach the
 * disk before a line file does, so a row may point at lines the disk does not have. Only records
 * after `synced_id` can be such, and none of them was acknowledged (that waits for the sync that
 * covers both files), so from the first such chunk on, the records are dropped: the broker sends
 * their messages again. Runs at open, before the cursors are read.
 */
function dropUnsyncedTail(db: DatabaseSync, lineFiles: LineFiles): void {
  const total = (name: string) =>
    Number(
      db.prepare("SELECT value FROM progress WHERE kind = 'total' AND name = ?").get(name)?.value ??
        0,
    );
  const syncedId = total("synced_id");
  const rows = db.prepare(
    // In file order, which is id order, so that the index chunks_in_files serves it.
    "SELECT first_id, last_id, ends, file, file_offset, crc FROM chunks WHERE file IS NOT NULL AND last_id > ? ORDER BY file, last_id",
  ).all(syncedId);
  let damaged: { firstId: number; reason: string } | undefined;
  for (const row of rows) {
    const ends = typed(row.ends as Uint8Array, Uint32Array);
    try {
      lineFiles.read(placeOf(row), ends[ends.length - 1]);
    } catch (error) {
      if (!(error instanceof DamagedLinesError)) throw error;
      damaged = { firstId: Number(row.first_id), reason: error.message };
      break;
    }
  }
  const lastId = total("last_id");
  if (damaged === undefined) return;
  const keep = damaged.firstId - 1;
  db.exec("BEGIN IMMEDIATE");
  try {
    // The records every sink had delivered were counted off already; the rest are now.
    const floor = Number(
      db.prepare("SELECT MIN(value) AS floor FROM progress WHERE kind = 'cursor'").get()?.floor ??
        keep,
    );
    let bytes = 0;
    for (
      const row of db.prepare(
        "SELECT first_id, last_id, sizes, bytes FROM chunks WHERE first_id > ?",
      )
        .all(keep)
    ) {
      const firstId = Number(row.first_id);
      if (Number(row.last_id) <= floor) continue;
      const sizes = typed(row.sizes as Uint8Array, Float64Array);
      bytes += firstId > floor
        ? Number(row.bytes)
        : sizes[sizes.length - 1] - sizes[floor - firstId + 1];
    }
    db.prepare("DELETE FROM chunks WHERE first_id > ?").run(keep);
    db.prepare("UPDATE progress SET value = value - ? WHERE kind = 'total' AND name = 'bytes'")
      .run(bytes);
    db.prepare(
      "UPDATE progress SET value = ?1 WHERE kind = 'total' AND name IN ('last_id', 'synced_id')",
    ).run(keep);
    db.prepare("UPDATE progress SET value = MIN(value, ?) WHERE kind = 'cursor'").run(keep);
    db.exec("COMMIT");
  } catch (error) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw error;
  }
  logger.warn(
    "The spool's newest records {first}–{last} were not all on disk when the worker stopped ({reason}); they were never acknowledged, so the broker sends their messages again",
    { first: damaged.firstId, last: lastId, reason: damaged.reason },
  );
}

// A BLOB comes back as a Uint8Array that may not be aligned for the wider type: copy it.
function typed<T extends Uint32Array | Float64Array>(
  blob: Uint8Array,
  type: { new (buffer: ArrayBuffer): T; BYTES_PER_ELEMENT: number },
): T {
  return new type(blob.slice().buffer);
}

/**
 * Schema 1 kept one row per record; schema 2 keeps chunks. Moves every
 * pending record over, with its id, inside the transaction of the open.
 */
function upgradeFromRecordRows(db: DatabaseSync): void {
  const last = Number(
    db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'records'").get()?.seq ?? 0,
  );
  const read = db.prepare(
    "SELECT id, text, received_at, topic FROM records WHERE id > ? ORDER BY id LIMIT 1000",
  );
  const insert = db.prepare(
    "INSERT INTO chunks (first_id, last_id, lines, ends, received_at, topics, sizes, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
  );
  let moved = 0;
  for (let rows = read.all(0); rows.length > 0; rows = read.all(rows[rows.length - 1].id)) {
    // Ids are dense within a run; a gap (never expected) starts a new chunk.
    let start = 0;
    for (let i = 1; i <= rows.length; i++) {
      if (i < rows.length && Number(rows[i].id) === Number(rows[i - 1].id) + 1) continue;
      const run = rows.slice(start, i);
      const { lines, ends } = encodeLines(run.map((row) => String(row.text)));
      const chunk: SpoolChunk = {
        lines,
        ends,
        receivedAt: Float64Array.from(run, (row) => Number(row.received_at)),
        topics: run.map((row) => String(row.topic)),
        deadLetters: [],
      };
      const sizes = recordSizes(chunk);
      insert.run(
        Number(run[0].id),
        Number(run[run.length - 1].id),
        lines,
        bytesOf(ends),
        bytesOf(chunk.receivedAt),
        JSON.stringify(chunk.topics),
        bytesOf(sizes),
        sizes[run.length],
      );
      moved += run.length;
      start = i;
    }
  }
  db.prepare("UPDATE progress SET value = ? WHERE kind = 'total' AND name = 'last_id'").run(last);
  db.exec("DROP TABLE records");
  if (moved > 0) {
    logger.info("Upgraded the spool: moved {count} pending records to chunks", { count: moved });
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
  readonly #lineFiles: LineFiles;
  /** Commits written so far, and how many of them are known to be on disk. */
  #commits = 0;
  #durable = 0;
  #running?: Promise<void>;
  #next?: Promise<void>;
  #closed = false;
  #syncs = 0;
  /** Set by the first sync that failed: every later one fails with it (see WalSync.fail). */
  #failure?: Error;

  constructor(path: string, lineFiles: LineFiles) {
    this.#path = path;
    this.#file = Deno.openSync(path, { read: true });
    this.#inode = this.#file.statSync().ino;
    this.#lineFiles = lineFiles;
  }

  /** Counts a commit; returns its number. */
  committed(): number {
    return ++this.#commits;
  }

  /** Commits counted so far. */
  get commits(): number {
    return this.#commits;
  }

  /** The first sync's failure, if one failed (see WalSync.fail). */
  get failure(): Error | undefined {
    return this.#failure;
  }

  /** Syncs the WAL now, on this thread (at open, before deleting what it says is delivered). */
  syncNow(): void {
    this.#file.syncDataSync();
  }

  sync(): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
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

  /**
   * Makes this and every later sync fail. After a failed `fdatasync`, Linux may drop the
   * dirty pages it could not write and report the next sync of the file as good, so trying
   * again would prove nothing: nothing is acknowledged any more, and a restart re-checks at
   * open what was not synced.
   */
  fail(error: unknown): void {
    this.#failure ??= new Error(
      `the disk reported an error (${error}): it may have dropped those writes and would report a second try as good, so the spool acknowledges nothing more. Restart the worker once the disk is healthy (at start-up the spool re-checks what it had not synced)`,
      { cause: error },
    );
  }

  #start(): Promise<void> {
    this.#next = undefined;
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    const upTo = this.#commits;
    if (this.#durable >= upTo || this.#closed) return Promise.resolve();
    const running = this.#syncData().then(() => {
      this.#durable = Math.max(this.#durable, upTo);
    }, (error) => {
      this.fail(error);
      throw this.#failure;
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
    // Closing the database checkpoints the WAL into it and syncs it, and Spool.close syncs the
    // line files first: nothing is left to do.
    if (this.#closed) return;
    // Both before a commit counts as durable: a row in the WAL points at its chunk's lines. And
    // both to the end, failed or not, so that no later sync overlaps this one.
    const results = await Promise.allSettled([this.#file.syncData(), this.#lineFiles.sync()]);
    for (const result of results) if (result.status === "rejected") throw result.reason;
  }
}

/** Per line file, the last record of its last chunk (from the index chunks_in_files). */
const FILE_ENDS =
  "SELECT file, MAX(last_id) AS last_id FROM chunks WHERE file IS NOT NULL GROUP BY file";

/** What Spool.open hands the spool besides the database. */
interface OpenedState {
  readonly cursors: Map<string, number>;
  readonly wal: WalSync;
  readonly lineFiles: LineFiles;
  readonly fileEnds: Map<number, number>;
}

interface Statements {
  readonly insertChunk: StatementSync;
  readonly chunkWith: StatementSync;
  readonly chunkSpans: StatementSync;
  readonly deleteChunks: StatementSync;
  readonly insertDeadLetter: StatementSync;
  readonly readDeadLetters: StatementSync;
  readonly sumDeadLetterBytes: StatementSync;
  readonly deleteDeadLetters: StatementSync;
  readonly setCursor: StatementSync;
  readonly addBytes: StatementSync;
  readonly setTotal: StatementSync;
  readonly total: StatementSync;
}

function prepareStatements(db: DatabaseSync): Statements {
  return {
    insertChunk: db.prepare(
      "INSERT INTO chunks (first_id, last_id, lines, ends, received_at, topics, sizes, bytes, file, file_offset, crc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ),
    chunkWith: db.prepare(
      "SELECT first_id, last_id, lines, ends, received_at, topics, sizes, file, file_offset, crc FROM chunks WHERE first_id <= ? ORDER BY first_id DESC LIMIT 1",
    ),
    // The chunks holding records in (?1, ?2]: those wholly at or below ?1 are already gone.
    chunkSpans: db.prepare(
      "SELECT first_id, last_id, bytes FROM chunks WHERE first_id <= ?2 AND last_id > ?1 ORDER BY first_id",
    ),
    deleteChunks: db.prepare("DELETE FROM chunks WHERE first_id <= ?1 AND last_id <= ?1"),
    insertDeadLetter: db.prepare("INSERT INTO dead_letters (line, bytes) VALUES (?, ?)"),
    readDeadLetters: db.prepare("SELECT id, line FROM dead_letters ORDER BY id LIMIT ?"),
    sumDeadLetterBytes: db.prepare(
      "SELECT COALESCE(SUM(bytes), 0) AS bytes FROM dead_letters WHERE id <= ?",
    ),
    deleteDeadLetters: db.prepare("DELETE FROM dead_letters WHERE id <= ?"),
    setCursor: db.prepare("UPDATE progress SET value = ? WHERE kind = 'cursor' AND name = ?"),
    addBytes: db.prepare(
      "UPDATE progress SET value = value + ? WHERE kind = 'total' AND name = 'bytes'",
    ),
    setTotal: db.prepare("UPDATE progress SET value = ? WHERE kind = 'total' AND name = ?"),
    total: db.prepare("SELECT value FROM progress WHERE kind = 'total' AND name = ?"),
  };
}

/**
 * Makes the cursors table match the configured sinks. Returns the cursors by
 * sink, and the lowest cursor before the change: what every sink had
 * delivered, so the records up to it were already counted off.
 */
function syncCursors(
  db: DatabaseSync,
  sinks: readonly string[],
): { cursors: Map<string, number>; previousFloor: number } {
  const stored = new Map<string, number>();
  for (const row of db.prepare("SELECT name, value FROM progress WHERE kind = 'cursor'").all()) {
    stored.set(String(row.name), Number(row.value));
  }
  const lastId = Number(
    db.prepare("SELECT value FROM progress WHERE kind = 'total' AND name = 'last_id'").get()
      ?.value ?? 0,
  );
  // A new sink starts at the oldest record still pending for anyone.
  const start = stored.size > 0 ? Math.min(...stored.values()) : lastId;
  const dropped = [...stored.keys()].filter((name) => !sinks.includes(name));
  const added = sinks.filter((name) => !stored.has(name));
  if (dropped.length === 0 && added.length === 0) return { cursors: stored, previousFloor: start };

  db.exec("BEGIN IMMEDIATE");
  try {
    const remove = db.prepare("DELETE FROM progress WHERE kind = 'cursor' AND name = ?");
    for (const name of dropped) remove.run(name);
    const insert = db.prepare(
      "INSERT INTO progress (kind, name, value) VALUES ('cursor', ?, ?)",
    );
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
  return {
    cursors: new Map(sinks.map((name) => [name, stored.get(name) ?? start])),
    previousFloor: start,
  };
}

const scratch = new Uint8Array(64 * 1024);
/** Up to this many UTF-16 units, utf8Length counts in JavaScript (a native call costs more). */
const SHORT_TEXT = 64;

/**
 * The UTF-8 length of `text` in bytes (a lone surrogate counts as U+FFFD, 3 bytes).
 *
 * @example
 * ```ts
 * utf8Length("µs"); // 3
 * ```
 */
export function utf8Length(text: string): number {
  // Encoding into a scratch buffer runs natively, several times faster than the loop below for
  // long texts; a short one (a topic, counted for every record) is quicker to count here.
  if (text.length > SHORT_TEXT && text.length * 3 <= scratch.length) {
    return encoder.encodeInto(text, scratch).written;
  }
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
