/**
 * The spool's fast paths give the same answers as its slow ones: records
 * stored a chunk per burst, read back from memory or from the database, in
 * whole chunks or in parts, and commits made durable by sync() rather than at
 * COMMIT.
 */
import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import {
  encodeLines,
  Spool,
  type SpoolChunk,
  type SpooledRecord,
  type SpoolEntry,
  utf8Length,
} from "../src/spool.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";

function numbered(from: number, count: number, pad = 0): string[] {
  return Array.from({ length: count }, (_, i) => `{"n":${from + i},"pad":"${"x".repeat(pad)}"}`);
}

function entry(records: string[], receivedAt = 1000): SpoolEntry {
  return { records, deadLetters: [], receivedAt, topic: TOPIC };
}

function chunk(texts: string[], topics: string[], receivedAt = 1000): SpoolChunk {
  const { lines, ends } = encodeLines(texts);
  return {
    lines,
    ends,
    receivedAt: new Float64Array(texts.length).fill(receivedAt),
    topics,
    deadLetters: [],
  };
}

async function withSpool(
  test: (open: (memoryBytes?: number) => Spool, path: string) => void | Promise<void>,
  sinks: string[] = ["file"],
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_throughput_test_" });
  const opened: Spool[] = [];
  try {
    await test((memoryBytes) => {
      const spool = Spool.open({
        path: `${dir}/spool.db`,
        sinks,
        maxBytes: 2 ** 30,
        memoryBytes,
      });
      opened.push(spool);
      return spool;
    }, `${dir}/spool.db`);
  } finally {
    for (const spool of opened) spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function readAll(spool: Spool): SpooledRecord[] {
  const all: SpooledRecord[] = [];
  for (let batch = spool.read("file", 100); batch.length > 0; batch = spool.read("file", 100)) {
    all.push(...batch);
    spool.acknowledge("file", batch[batch.length - 1].id);
  }
  return all;
}

Deno.test("records of several entries in one append keep their order, receipt times and dense ids", async () => {
  await withSpool(async (open) => {
    const spool = open();
    const texts = numbered(1, 40);
    spool.append([entry(texts.slice(0, 25), 1111), entry(texts.slice(25), 2222)]);
    await spool.sync();
    const records = spool.read("file", 100);
    assert.deepEqual(records.map((record) => record.id), texts.map((_, i) => i + 1));
    assert.deepEqual(records.map((record) => record.text), texts);
    assert.equal(records[24].receivedAt, 1111);
    assert.equal(records[25].receivedAt, 2222);
    assert.equal(spool.pending("file"), 40);
  });
});

Deno.test("records read from memory and from the database after a restart are the same", async () => {
  await withSpool((open) => {
    const first = open();
    first.append([entry(numbered(1, 50), 1111)]);
    const fromMemory = first.read("file", 100);
    first.close();
    const fromDatabase = open().read("file", 100);
    assert.deepEqual(fromDatabase, fromMemory);
  });
});

Deno.test("records beyond the in-memory window are read from the database, in order, none lost", async () => {
  await withSpool((open) => {
    // About 1.5 MiB of records, a chunk per 100: far more than the 64 KiB kept in memory.
    const spool = open(64 * 1024);
    const texts = numbered(1, 1500, 1000);
    for (let at = 0; at < texts.length; at += 100) spool.append([entry(texts.slice(at, at + 100))]);
    const delivered = readAll(spool);
    assert.deepEqual(delivered.map((record) => record.text), texts);
    assert.equal(spool.pending("file"), 0);
    assert.equal(spool.bytes, 0, "every delivered record's bytes are counted off");
  });
});

Deno.test("byte accounting is the same whether removed records were in memory or not", async () => {
  await withSpool((open) => {
    const spool = open();
    const texts = numbered(1, 30, 10);
    spool.append([entry(texts)]);
    const expected = texts.reduce((sum, text) => sum + utf8Length(text) + utf8Length(TOPIC), 0);
    assert.equal(spool.bytes, expected);
    spool.acknowledge("file", 10);
    spool.close();
    const reopened = open();
    reopened.acknowledge("file", 30);
    assert.equal(reopened.bytes, 0);
  });
});

Deno.test("sync resolves once every earlier commit is on disk; calls made meanwhile share syncs", async () => {
  await withSpool(async (open) => {
    const spool = open();
    await spool.sync(); // nothing committed since open: resolves at once
    const syncs: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      spool.append([entry(numbered(i * 10, 10))]);
      syncs.push(spool.sync());
    }
    await Promise.all(syncs);
    assert.equal(spool.pending("file"), 200);
  });
});

Deno.test("utf8Length counts like TextEncoder, for short and long text", () => {
  const encoder = new TextEncoder();
  for (const text of ["", "abc", "µs", "日本", "💡x", "\ud800", "é".repeat(30_000)]) {
    const expected = encoder.encode(text).length;
    assert.equal(utf8Length(text), expected, JSON.stringify(text.slice(0, 10)));
  }
});

Deno.test("a batch reads across chunks: lines are the records' JSON Lines, and each record keeps its topic", async () => {
  await withSpool((open) => {
    const spool = open();
    spool.appendChunks([
      chunk(['{"n":1}', '{"n":2}'], ["a/1/u/data", "a/2/u/data"], 10),
      chunk(['{"n":3}'], ["a/3/u/data"], 20),
    ]);
    spool.appendChunks([chunk(['{"n":4}', '{"n":"µ"}'], ["a/4/u/data", "a/5/u/data"], 30)]);
    const batch = spool.readBatch("file", 4);
    assert.equal(batch.firstId, 1);
    assert.equal(batch.lastId, 4);
    assert.equal(
      new TextDecoder().decode(batch.lines()),
      '{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n',
    );
    assert.deepEqual(
      Array.from({ length: batch.length }, (_, i) => [batch.text(i), batch.topic(i)]),
      [['{"n":1}', "a/1/u/data"], ['{"n":2}', "a/2/u/data"], ['{"n":3}', "a/3/u/data"], [
        '{"n":4}',
        "a/4/u/data",
      ]],
    );
    assert.deepEqual([batch.receivedAt(1), batch.receivedAt(2), batch.receivedAt(3)], [10, 20, 30]);
    spool.acknowledge("file", 1);
    const rest = spool.readBatch("file", 100);
    assert.equal(new TextDecoder().decode(rest.lines()), '{"n":2}\n{"n":3}\n{"n":4}\n{"n":"µ"}\n');
    assert.equal(spool.readBatch("file", 0).length, 0);
  });
});

Deno.test("a chunk's bytes are freed once every sink has delivered its records, not before", async () => {
  await withSpool((open) => {
    const spool = open();
    const first = chunk(['{"n":1}', '{"n":2}'], [TOPIC, TOPIC]);
    const second = chunk(['{"n":3}'], [TOPIC]);
    spool.appendChunks([first, second]);
    spool.acknowledge("file", 3);
    spool.acknowledge("webhook", 1);
    assert.equal(first.lines.byteLength, 16, "the webhook has yet to deliver record 2");
    const pending = spool.readBatch("webhook", 10);
    assert.equal(new TextDecoder().decode(pending.lines()), '{"n":2}\n{"n":3}\n');
    spool.acknowledge("webhook", 2);
    assert.equal(first.lines.byteLength, 0, "both sinks have delivered the first chunk");
    assert.equal(second.lines.byteLength, 8);
    assert.equal(new TextDecoder().decode(spool.readBatch("webhook", 10).lines()), '{"n":3}\n');
  }, ["file", "webhook"]);
});

Deno.test("a chunk read back from the database is freed once every sink has delivered it", async () => {
  await withSpool((open) => {
    // No memory for recent chunks: sinks read every chunk back from the database.
    const spool = open(0);
    spool.appendChunks([chunk(['{"n":1}', '{"n":2}'], [TOPIC, TOPIC])]);
    spool.appendChunks([chunk(['{"n":3}'], [TOPIC])]);
    spool.appendChunks([chunk(['{"n":4}'], [TOPIC])]);
    const first = spool.readBatch("file", 2).lines();
    assert.equal(new TextDecoder().decode(first), '{"n":1}\n{"n":2}\n');
    spool.acknowledge("file", 2);
    assert.equal(first.byteLength, 16, "the webhook has yet to deliver it");
    spool.acknowledge("webhook", 2);
    assert.equal(first.byteLength, 0, "both sinks have delivered it");
    assert.equal(
      new TextDecoder().decode(spool.readBatch("webhook", 10).lines()),
      '{"n":3}\n{"n":4}\n',
    );
  }, ["file", "webhook"]);
});

Deno.test("a chunk pushed out of memory is freed unless a sink's unacknowledged batch holds it", async () => {
  await withSpool((open) => {
    // Memory for one chunk: each append pushes the one before out, to be read back from the database.
    const spool = open(0);
    const first = chunk(['{"n":1}'], [TOPIC]);
    const second = chunk(['{"n":2}'], [TOPIC]);
    spool.appendChunks([first]);
    const held = spool.readBatch("webhook", 1).lines();
    spool.appendChunks([second]);
    assert.equal(new TextDecoder().decode(held), '{"n":1}\n', "the webhook's batch still reads it");
    spool.appendChunks([chunk(['{"n":3}'], [TOPIC])]);
    assert.equal(second.lines.byteLength, 0, "no batch held the second chunk: freed");
    assert.equal(
      new TextDecoder().decode(spool.readBatch("file", 10).lines()),
      '{"n":1}\n{"n":2}\n{"n":3}\n',
      "read back from the database",
    );
  }, ["file", "webhook"]);
});

Deno.test("chunks appended while every sink reads back from the database are freed, all but the newest", async () => {
  await withSpool((open) => {
    const before = open();
    before.append([entry(numbered(1, 3))]);
    before.close();
    // After a restart the backlog is on disk only: the sink reads it from there, behind what
    // arrives now, which it would reach only after it was pushed out of memory anyway.
    const spool = open();
    const arriving = [chunk(['{"n":4}'], [TOPIC]), chunk(['{"n":5}'], [TOPIC])];
    const newest = chunk(['{"n":6}'], [TOPIC]);
    for (const next of [...arriving, newest]) spool.appendChunks([next]);
    assert.deepEqual(arriving.map((next) => next.lines.byteLength), [0, 0], "freed at once");
    assert.equal(newest.lines.byteLength, 8, "where the sink will catch up");
    assert.deepEqual(
      readAll(spool).map((record) => record.text),
      [...numbered(1, 3), '{"n":4}', '{"n":5}', '{"n":6}'],
      "read back from the database",
    );
  });
});

Deno.test("a chunk read back from the database is freed once no sink reads in it, delivered or not", async () => {
  await withSpool((open) => {
    // No memory for recent chunks beyond the newest: sinks read the others back from the database.
    const spool = open(0);
    for (const texts of [['{"n":1}', '{"n":2}'], ['{"n":3}'], ['{"n":4}'], ['{"n":5}']]) {
      spool.appendChunks([chunk(texts, texts.map(() => TOPIC))]);
    }
    spool.acknowledge("webhook", spool.readBatch("webhook", 2).lastId);
    const third = spool.readBatch("webhook", 1).lines();
    assert.equal(new TextDecoder().decode(third), '{"n":3}\n');
    spool.acknowledge("webhook", 3);
    assert.equal(
      third.byteLength,
      0,
      "the webhook has moved on; the file sink is still in record 1",
    );
    assert.deepEqual(
      readAll(spool).map((record) => record.text),
      ['{"n":1}', '{"n":2}', '{"n":3}', '{"n":4}', '{"n":5}'],
      "the file sink reads it back again",
    );
  }, ["file", "webhook"]);
});

Deno.test("a chunk whose parts disagree is refused, and the append it was in leaves nothing", async () => {
  await withSpool((open) => {
    const spool = open();
    const bad = { ...chunk(['{"n":2}'], [TOPIC]), topics: [] };
    assert.throws(
      () => spool.appendChunks([chunk(['{"n":1}'], [TOPIC]), bad]),
      /parts disagree: 1 line ends .* 0 topics/,
    );
    assert.equal(spool.pending("file"), 0);
    assert.equal(spool.bytes, 0);
  });
});

Deno.test("a chunk delivered in part keeps only its pending records' bytes, across a restart", async () => {
  await withSpool((open) => {
    const spool = open(0);
    const texts = numbered(1, 10);
    spool.appendChunks([chunk(texts, Array(10).fill(TOPIC))]);
    const size = (text: string) => utf8Length(text) + utf8Length(TOPIC);
    spool.acknowledge("file", 4);
    assert.equal(spool.bytes, texts.slice(4).reduce((sum, text) => sum + size(text), 0));
    spool.close();
    const reopened = open(0);
    assert.deepEqual(reopened.read("file", 3).map((record) => record.text), texts.slice(4, 7));
    reopened.acknowledge("file", 7);
    assert.equal(reopened.bytes, texts.slice(7).reduce((sum, text) => sum + size(text), 0));
    reopened.acknowledge("file", 10);
    assert.equal(reopened.bytes, 0);
  });
});

Deno.test("delivered one record at a time, a chunk's row goes once its last record is delivered", async () => {
  await withSpool((open, path) => {
    // Closed first: the spool holds its database in exclusive mode.
    const rowsAfterClosing = (spool: Spool) => {
      spool.close();
      const db = new DatabaseSync(path, { readOnly: true });
      try {
        return db.prepare("SELECT first_id FROM chunks ORDER BY first_id").all()
          .map((row) => Number(row.first_id));
      } finally {
        db.close();
      }
    };
    const spool = open();
    spool.appendChunks([chunk(numbered(1, 3), Array(3).fill(TOPIC))]);
    spool.appendChunks([chunk(numbered(4, 2), Array(2).fill(TOPIC))]);
    for (const id of [1, 2, 3]) spool.acknowledge("file", id);
    assert.deepEqual(rowsAfterClosing(spool), [4], "chunks in memory");
    // After a restart the second chunk is read back from the database.
    const reopened = open();
    assert.equal(reopened.readBatch("file", 1).length, 1);
    reopened.acknowledge("file", 4);
    assert.equal(reopened.readBatch("file", 1).length, 1);
    reopened.acknowledge("file", 5);
    assert.deepEqual(rowsAfterClosing(reopened), [], "a chunk read back from the database");
  });
});

Deno.test("a spool written by the first version (a row per record) is upgraded with every pending record", async () => {
  await withSpool((open, path) => {
    const old = new DatabaseSync(path);
    old.exec(`
      CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL,
        received_at INTEGER NOT NULL, topic TEXT NOT NULL, bytes INTEGER NOT NULL);
      CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL,
        bytes INTEGER NOT NULL);
      CREATE TABLE cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO records (text, received_at, topic, bytes) VALUES
        ('{"n":1}', 1, 'a/1/u/data', 17), ('{"n":2}', 2, 'a/2/u/data', 17),
        ('{"n":3}', 3, 'a/3/u/data', 17);
      DELETE FROM records WHERE id = 1;
      INSERT INTO dead_letters (line, bytes) VALUES ('{"d":1}', 7);
      INSERT INTO cursors VALUES ('file', 1);
      INSERT INTO totals VALUES ('bytes', 41);
      PRAGMA user_version = 1;
    `);
    old.close();

    const spool = open();
    assert.deepEqual(spool.read("file", 10), [
      { id: 2, text: '{"n":2}', receivedAt: 2, topic: "a/2/u/data" },
      { id: 3, text: '{"n":3}', receivedAt: 3, topic: "a/3/u/data" },
    ]);
    assert.equal(spool.bytes, 41);
    assert.deepEqual(spool.readDeadLetters(10), [{ id: 1, line: '{"d":1}' }]);
    spool.append([entry(['{"n":4}'])]);
    assert.equal(spool.read("file", 10)[2].id, 4, "ids go on from the old sequence");
  });
});

/** A chunk of `count` records from `from`, about 72 KB each 100: over the line-file threshold. */
function largeChunk(from: number, count = 100): SpoolChunk {
  return chunk(numbered(from, count, 700), Array(count).fill(TOPIC));
}

function lineFiles(path: string): string[] {
  return [...Deno.readDirSync(`${path}-lines`)].map((entry) => entry.name).sort();
}

Deno.test("a large chunk's lines go to a line file beside the database and are read back from it", async () => {
  await withSpool((open, path) => {
    const spool = open();
    const stored = largeChunk(1);
    spool.appendChunks([stored, chunk(['{"small":1}'], [TOPIC])]);
    spool.close();
    assert.deepEqual(lineFiles(path), ["00000001.jsonl"]);
    assert.deepEqual(
      Deno.readFileSync(`${path}-lines/00000001.jsonl`),
      stored.lines,
      "the file holds the chunk's JSON Lines as they are",
    );
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      const rows = db.prepare("SELECT length(lines) AS bytes, file FROM chunks ORDER BY first_id")
        .all();
      assert.deepEqual(rows.map((row) => [row.bytes, row.file]), [[0, 1], [12, null]]);
    } finally {
      db.close();
    }
    const reopened = open();
    const records = readAll(reopened);
    assert.deepEqual(records.map((record) => record.text), [
      ...numbered(1, 100, 700),
      '{"small":1}',
    ]);
    assert.deepEqual(
      records.map((record) => record.id),
      Array.from({ length: 101 }, (_, i) => i + 1),
    );
  });
});

Deno.test("a line file is deleted once every sink has its chunks and the deletion is on disk", async () => {
  await withSpool(async (open, path) => {
    const first = open();
    first.appendChunks([largeChunk(1)]);
    first.close();
    const spool = open();
    spool.appendChunks([largeChunk(101)]);
    assert.deepEqual(lineFiles(path), ["00000001.jsonl", "00000002.jsonl"]);
    spool.acknowledge("file", 150);
    spool.acknowledge("stdout", 50);
    spool.appendChunks([chunk(['{"small":1}'], [TOPIC])]);
    await spool.sync();
    assert.deepEqual(
      lineFiles(path),
      ["00000001.jsonl", "00000002.jsonl"],
      "stdout still needs it",
    );
    spool.acknowledge("stdout", 100);
    spool.appendChunks([chunk(['{"small":2}'], [TOPIC])]);
    assert.deepEqual(lineFiles(path), ["00000001.jsonl", "00000002.jsonl"], "not before the sync");
    await spool.sync();
    assert.deepEqual(lineFiles(path), ["00000002.jsonl"], "the file being written stays");
    assert.deepEqual(spool.read("stdout", 1).map((record) => record.id), [101]);

    spool.appendChunks([largeChunk(203)]);
    spool.acknowledge("stdout", 202);
    spool.acknowledge("file", 202);
    spool.appendChunks([chunk(['{"small":3}'], [TOPIC])]);
    await spool.sync();
    assert.deepEqual(lineFiles(path), ["00000002.jsonl"], "a file with a chunk pending stays");
    assert.equal(spool.read("file", 200).length, 101);

    spool.acknowledge("stdout", 303);
    spool.acknowledge("file", 303);
    spool.appendChunks([chunk(['{"small":4}'], [TOPIC])]);
    await spool.sync();
    assert.deepEqual(lineFiles(path), [], "once delivered, the file being written goes too");
    spool.appendChunks([largeChunk(305)]);
    assert.deepEqual(lineFiles(path), ["00000003.jsonl"], "and the next chunk starts a new one");
    assert.equal(spool.read("file", 200).length, 101);
  }, ["file", "stdout"]);
});

Deno.test("after a crash, chunks whose line file missed the disk are dropped from the end, as never acknowledged", async () => {
  await withSpool(async (open, path) => {
    const spool = open();
    spool.appendChunks([largeChunk(1)]);
    await spool.sync(); // records 1–100 acknowledged to the broker
    spool.appendChunks([largeChunk(101)]);
    spool.appendChunks([chunk(['{"small":1}'], [TOPIC])]); // no sync: never acknowledged
    spool.acknowledge("file", 150);
    const keptBytes = Deno.statSync(`${path}-lines/00000001.jsonl`).size - 72_000;
    spool.close();
    // The WAL reached the disk, the second chunk's lines did not (all of them past 20 bytes).
    Deno.truncateSync(`${path}-lines/00000001.jsonl`, keptBytes + 20);

    const reopened = open();
    assert.equal(reopened.pending("file"), 0, "the cursor is moved back to the last record kept");
    reopened.appendChunks([chunk(['{"again":101}'], [TOPIC])]);
    assert.deepEqual(reopened.read("file", 10).map((record) => [record.id, record.text]), [
      [101, '{"again":101}'],
    ]);
    reopened.acknowledge("file", 101);
    assert.equal(reopened.bytes, 0, "the dropped records' bytes are counted off");
  });
});

Deno.test("records on disk once, and then lost by the disk, are reported with what happened", async () => {
  await withSpool(async (open, path) => {
    const spool = open();
    spool.appendChunks([largeChunk(1)]);
    await spool.sync();
    spool.appendChunks([chunk(['{"small":1}'], [TOPIC])]); // records the sync in the database
    spool.close();
    const file = `${path}-lines/00000001.jsonl`;
    const bytes = Deno.readFileSync(file);
    bytes[10] ^= 1;
    Deno.writeFileSync(file, bytes);

    const reopened = open();
    assert.equal(reopened.pending("file"), 101, "records the spool had synced are not dropped");
    assert.throws(
      () => reopened.read("file", 10),
      /cannot read back records 1–100: the \d+ bytes from 0 in .*00000001\.jsonl are not those written \(CRC-32 differs\)\. They were on disk once .* check it \(dmesg, SMART\)/,
    );
  });
});

Deno.test("a line file no chunk points at is deleted at open", async () => {
  await withSpool((open, path) => {
    const spool = open();
    spool.appendChunks([largeChunk(1)]);
    spool.acknowledge("file", 100);
    spool.close(); // the deletion is committed; say the worker stopped before the file went
    Deno.writeFileSync(`${path}-lines/00000007.jsonl`, new Uint8Array(10));
    open();
    assert.deepEqual(lineFiles(path), []);
  });
});

/**
 * Makes the WAL's `fdatasync` fail once and delays the line files' (a disk error cannot be had
 * on demand here); `restore` puts Deno's back.
 */
function injectSyncFaults(walPath: string) {
  const syncData = Deno.FsFile.prototype.syncData;
  const syncDataSync = Deno.FsFile.prototype.syncDataSync;
  const walInode = Deno.statSync(walPath).ino;
  const faults = { failWalOnce: false, failLineFilesNow: false, lineSyncsSettled: 0 };
  Deno.FsFile.prototype.syncData = function (this: Deno.FsFile) {
    if (this.statSync().ino === walInode) {
      if (!faults.failWalOnce) return syncData.call(this);
      faults.failWalOnce = false;
      return Promise.reject(new Error("EIO (injected)"));
    }
    return new Promise<void>((resolve) => setTimeout(resolve, 50)).then(() => syncData.call(this))
      .finally(() => faults.lineSyncsSettled++);
  };
  Deno.FsFile.prototype.syncDataSync = function (this: Deno.FsFile) {
    if (faults.failLineFilesNow && this.statSync().ino !== walInode) {
      throw new Error("EIO (injected)");
    }
    return syncDataSync.call(this);
  };
  const restore = () => {
    Deno.FsFile.prototype.syncData = syncData;
    Deno.FsFile.prototype.syncDataSync = syncDataSync;
  };
  return { faults, restore };
}

Deno.test("after a failed sync, no later sync succeeds until a restart, and none ends before the line files' do", async () => {
  await withSpool(async (open, path) => {
    const spool = open();
    const { faults, restore } = injectSyncFaults(`${path}-wal`);
    try {
      spool.appendChunks([largeChunk(1)]);
      faults.failWalOnce = true;
      await assert.rejects(
        spool.sync(),
        /the disk reported an error \(Error: EIO \(injected\)\).* acknowledges nothing more\. Restart the worker/,
      );
      assert.equal(faults.lineSyncsSettled, 1, "the line file's sync had ended by then");
      spool.appendChunks([largeChunk(101)]);
      await assert.rejects(
        spool.sync(),
        /acknowledges nothing more/,
        "a second try proves nothing",
      );
      assert.match(spool.syncFailure?.message ?? "", /the disk reported an error/);
    } finally {
      restore();
    }
    spool.close();
    const reopened = open();
    assert.equal(reopened.syncFailure, undefined, "a restart starts afresh");
    reopened.appendChunks([largeChunk(201)]);
    await reopened.sync();
    assert.equal(reopened.pending("file"), 300);
  });
});

Deno.test("a sync still waiting when the spool closes fails if the line files cannot be synced then", async () => {
  await withSpool(async (open, path) => {
    const spool = open();
    const { faults, restore } = injectSyncFaults(`${path}-wal`);
    try {
      spool.appendChunks([largeChunk(1)]);
      const waiting = spool.sync();
      faults.failLineFilesNow = true;
      spool.close();
      await assert.rejects(waiting, /the disk reported an error/);
      await assert.rejects(spool.sync(), /acknowledges nothing more/);
    } finally {
      restore();
    }
  });
});
