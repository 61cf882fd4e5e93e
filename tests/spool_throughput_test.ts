/**
 * The spool's fast paths give the same answers as its slow ones: records
 * inserted many rows per statement, read back from memory or from the
 * database, and commits made durable by sync() rather than at COMMIT.
 */
import assert from "node:assert/strict";
import { Spool, type SpooledRecord, type SpoolEntry, utf8Length } from "../src/spool.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";

function numbered(from: number, count: number, pad = 0): string[] {
  return Array.from({ length: count }, (_, i) => `{"n":${from + i},"pad":"${"x".repeat(pad)}"}`);
}

function entry(records: string[], receivedAt = 1000): SpoolEntry {
  return { records, deadLetters: [], receivedAt, topic: TOPIC };
}

async function withSpool(
  test: (open: () => Spool) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_throughput_test_" });
  const opened: Spool[] = [];
  try {
    await test(() => {
      const spool = Spool.open({ path: `${dir}/spool.db`, sinks: ["file"], maxBytes: 2 ** 30 });
      opened.push(spool);
      return spool;
    });
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

Deno.test("a batch of 40 records (two 16-row INSERTs and 8 single rows) keeps order and dense ids", async () => {
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
    const spool = open();
    // About 1.5 MiB of records: more than the spool keeps in memory.
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
