import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { Spool, type SpoolEntry, utf8Length } from "../src/spool.ts";

const TOPIC = "a/b827eb2bb2a9/u/data";

function entry(records: string[], deadLetters: string[] = [], receivedAt = 1000): SpoolEntry {
  return { records, deadLetters, receivedAt, topic: TOPIC };
}

function texts(spool: Spool, sink: string, limit = 100): string[] {
  return spool.read(sink, limit).map((record) => record.text);
}

async function withSpool(
  sinks: string[],
  test: (spool: Spool, path: string) => void | Promise<void>,
  maxBytes = 1_000_000,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  const path = `${dir}/spool.db`;
  const spool = Spool.open({ path, sinks, maxBytes });
  try {
    await test(spool, path);
  } finally {
    spool.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("read returns records oldest first with their receipt time and topic", async () => {
  await withSpool(["stdout"], (spool) => {
    spool.append([entry(['{"n":1}', '{"n":2}'], [], 1111), entry(['{"n":3}'], [], 2222)]);
    assert.deepEqual(spool.read("stdout", 10), [
      { id: 1, text: '{"n":1}', receivedAt: 1111, topic: TOPIC },
      { id: 2, text: '{"n":2}', receivedAt: 1111, topic: TOPIC },
      { id: 3, text: '{"n":3}', receivedAt: 2222, topic: TOPIC },
    ]);
    assert.deepEqual(texts(spool, "stdout", 2), ['{"n":1}', '{"n":2}']);
  });
});

Deno.test("two sinks read at their own pace and rows go once both have them", async () => {
  await withSpool(["fast", "slow"], (spool) => {
    spool.append([entry(['{"n":1}', '{"n":2}', '{"n":3}'])]);
    const bytesBefore = spool.bytes;

    spool.acknowledge("fast", 3);
    assert.deepEqual(texts(spool, "fast"), []);
    assert.deepEqual(texts(spool, "slow"), ['{"n":1}', '{"n":2}', '{"n":3}']);
    assert.equal(spool.pending("fast"), 0);
    assert.equal(spool.pending("slow"), 3);
    assert.equal(spool.bytes, bytesBefore, "nothing is pruned while a sink still needs it");

    spool.acknowledge("slow", 2);
    assert.deepEqual(texts(spool, "slow"), ['{"n":3}']);
    assert.equal(spool.bytes, utf8Length('{"n":3}') + utf8Length(TOPIC));

    spool.acknowledge("slow", 3);
    assert.equal(spool.bytes, 0);
  });
});

Deno.test("acknowledging an id the spool never handed out is an error", async () => {
  await withSpool(["stdout"], (spool) => {
    spool.append([entry(['{"n":1}'])]);
    assert.throws(() => spool.acknowledge("stdout", 5), /last record is 1/);
    assert.throws(() => spool.read("nope", 1), /no cursor for sink "nope"/);
  });
});

Deno.test("bytes counts records with their topic plus dead letters, and full follows maxBytes", async () => {
  const record = '{"v":"µ"}';
  const recordBytes = utf8Length(record) + utf8Length(TOPIC);
  await withSpool(["stdout"], (spool) => {
    assert.equal(spool.full, false);
    spool.append([entry([record], ['{"reason":"x"}'])]);
    assert.equal(spool.bytes, recordBytes + 14);
    assert.equal(spool.full, false);
    spool.append([entry([record])]);
    assert.equal(spool.full, true);

    spool.acknowledge("stdout", 2);
    assert.equal(spool.bytes, 14);
    spool.removeDeadLetters(spool.readDeadLetters(10)[0].id);
    assert.equal(spool.bytes, 0);
    assert.equal(spool.full, false);
  }, recordBytes * 2 + 14);
});

Deno.test("utf8Length matches TextEncoder for ASCII, 2-, 3-, 4-byte and lone surrogates", () => {
  for (const text of ["", "abc", "µ", "€", "😀", "a😀b", "\ud800", "\udc00x", "x\ud800"]) {
    assert.equal(utf8Length(text), new TextEncoder().encode(text).length, JSON.stringify(text));
  }
});

Deno.test("reopening keeps undelivered records, cursors, dead letters and bytes", async () => {
  await withSpool(["a", "b"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}'], ['{"dl":1}'])]);
    spool.acknowledge("a", 2);
    spool.acknowledge("b", 1);
    const bytes = spool.bytes;
    spool.close();

    const reopened = Spool.open({ path, sinks: ["a", "b"], maxBytes: 1_000_000 });
    try {
      assert.deepEqual(texts(reopened, "a"), []);
      assert.deepEqual(texts(reopened, "b"), ['{"n":2}']);
      assert.deepEqual(reopened.readDeadLetters(10), [{ id: 1, line: '{"dl":1}' }]);
      assert.equal(reopened.bytes, bytes);
      reopened.append([entry(['{"n":3}'])]);
      assert.equal(reopened.read("a", 10)[0].id, 3, "ids keep increasing across restarts");
    } finally {
      reopened.close();
    }
  });
});

Deno.test("ids are never reused after every record was delivered and removed", async () => {
  await withSpool(["stdout"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}'])]);
    spool.acknowledge("stdout", 2);
    spool.close();
    const reopened = Spool.open({ path, sinks: ["stdout"], maxBytes: 1_000_000 });
    try {
      reopened.append([entry(['{"n":3}'])]);
      assert.deepEqual(reopened.read("stdout", 10).map((record) => record.id), [3]);
    } finally {
      reopened.close();
    }
  });
});

Deno.test("a spool of schema 2 opens with its cursors, ids and bytes, moved into one table", async () => {
  await withSpool(["a", "b"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}', '{"n":3}'], ['{"dl":1}'])]);
    spool.acknowledge("a", 3);
    spool.acknowledge("b", 1);
    const bytes = spool.bytes;
    spool.close();
    // Back to schema 2: every chunk's lines in its row, cursors and totals in tables of their own.
    const old = new DatabaseSync(path);
    old.exec(`
      DROP INDEX chunks_in_files;
      ALTER TABLE chunks DROP COLUMN file;
      ALTER TABLE chunks DROP COLUMN file_offset;
      ALTER TABLE chunks DROP COLUMN crc;
      DELETE FROM progress WHERE kind = 'total' AND name = 'synced_id';
      CREATE TABLE cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL) WITHOUT ROWID;
      CREATE TABLE totals (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
      INSERT INTO cursors SELECT name, value FROM progress WHERE kind = 'cursor';
      INSERT INTO totals SELECT name, value FROM progress WHERE kind = 'total';
      DROP TABLE progress;
      PRAGMA user_version = 2;
    `);
    old.close();

    const reopened = Spool.open({ path, sinks: ["a", "b"], maxBytes: 1_000_000 });
    try {
      assert.equal(reopened.bytes, bytes);
      assert.deepEqual(texts(reopened, "a"), []);
      assert.deepEqual(texts(reopened, "b"), ['{"n":2}', '{"n":3}']);
      reopened.append([entry(['{"n":4}'])]);
      assert.deepEqual(reopened.read("a", 10).map((record) => record.id), [4]);
    } finally {
      reopened.close();
    }
    const upgraded = new DatabaseSync(path);
    try {
      assert.equal(upgraded.prepare("PRAGMA user_version").get()?.user_version, 4);
      const columns = upgraded.prepare("SELECT name FROM pragma_table_info('chunks')").all();
      assert.deepEqual(columns.map((row) => row.name).slice(-3), ["file", "file_offset", "crc"]);
      const tables = upgraded.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      assert.deepEqual(tables.map((row) => row.name).sort(), [
        "chunks",
        "dead_letters",
        "progress",
        "sqlite_sequence",
      ]);
    } finally {
      upgraded.close();
    }
  });
});

Deno.test("a spool of a newer schema is refused with what to do, and left as it is", async () => {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  const path = `${dir}/spool.db`;
  try {
    const newer = new DatabaseSync(path);
    newer.exec("CREATE TABLE future (x); PRAGMA user_version = 99;");
    newer.close();
    assert.throws(
      () => Spool.open({ path, sinks: ["file"], maxBytes: 1e6 }),
      (error: Error) => {
        assert.match(error.message, new RegExp(`^Cannot open the spool database ${path}: `));
        assert.match(error.message, /newer gridrelay \(schema 99, this one knows 4\)/);
        assert.match(error.message, /Run that version/);
        assert.doesNotMatch(error.message, /permission|--allow/);
        return true;
      },
    );
    const untouched = new DatabaseSync(path);
    try {
      assert.equal(untouched.prepare("PRAGMA user_version").get()?.user_version, 99);
    } finally {
      untouched.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("after every record was delivered, reopening counts no bytes but the dead letters'", async () => {
  await withSpool(["a", "b"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}'], ['{"dl":1}'])]);
    spool.acknowledge("a", 2);
    spool.acknowledge("b", 2);
    spool.close();
    const reopened = Spool.open({ path, sinks: ["a", "b"], maxBytes: 1_000_000 });
    try {
      assert.equal(reopened.bytes, utf8Length('{"dl":1}'));
      reopened.removeDeadLetters(1);
      assert.equal(reopened.bytes, 0);
    } finally {
      reopened.close();
    }
  });
});

Deno.test("a new sink starts at the oldest pending record", async () => {
  await withSpool(["a", "b"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}', '{"n":3}'])]);
    spool.acknowledge("a", 3);
    spool.acknowledge("b", 1);
    spool.close();

    const reopened = Spool.open({ path, sinks: ["a", "b", "c"], maxBytes: 1_000_000 });
    try {
      assert.deepEqual(texts(reopened, "c"), ['{"n":2}', '{"n":3}']);
      assert.equal(reopened.pending("c"), 2);
    } finally {
      reopened.close();
    }
  });
});

Deno.test("a new sink on an empty spool starts after the last record ever appended", async () => {
  await withSpool(["a"], (spool, path) => {
    spool.append([entry(['{"n":1}'])]);
    spool.acknowledge("a", 1);
    spool.close();

    const reopened = Spool.open({ path, sinks: ["a", "b"], maxBytes: 1_000_000 });
    try {
      assert.equal(reopened.pending("b"), 0);
      reopened.append([entry(['{"n":2}'])]);
      assert.deepEqual(texts(reopened, "b"), ['{"n":2}']);
    } finally {
      reopened.close();
    }
  });
});

Deno.test("the cursor of a sink no longer configured is dropped and its backlog pruned", async () => {
  await withSpool(["a", "gone"], (spool, path) => {
    spool.append([entry(['{"n":1}', '{"n":2}'])]);
    spool.acknowledge("a", 2);
    spool.close();

    const reopened = Spool.open({ path, sinks: ["a"], maxBytes: 1_000_000 });
    try {
      assert.deepEqual(reopened.sinks, ["a"]);
      assert.equal(reopened.bytes, 0);
      assert.throws(() => reopened.pending("gone"), /no cursor for sink "gone"/);
    } finally {
      reopened.close();
    }
  });
});

Deno.test("acknowledge with dead letters commits both together", async () => {
  await withSpool(["webhook"], (spool) => {
    spool.append([entry(['{"n":1}'])]);
    spool.acknowledge("webhook", 1, { deadLetters: ['{"reason":"refused"}'] });
    assert.equal(spool.pending("webhook"), 0);
    assert.deepEqual(spool.readDeadLetters(10).map((letter) => letter.line), [
      '{"reason":"refused"}',
    ]);
    assert.equal(spool.bytes, utf8Length('{"reason":"refused"}'));
  });
});

Deno.test("dead letters read oldest first and are removed up to an id", async () => {
  await withSpool(["stdout"], (spool) => {
    spool.append([entry([], ['{"d":1}', '{"d":2}'])]);
    spool.appendDeadLetters(['{"d":3}']);
    assert.deepEqual(spool.readDeadLetters(2), [{ id: 1, line: '{"d":1}' }, {
      id: 2,
      line: '{"d":2}',
    }]);
    spool.removeDeadLetters(2);
    assert.deepEqual(spool.readDeadLetters(10), [{ id: 3, line: '{"d":3}' }]);
  });
});

Deno.test("a dead letter added after a read found none is read, however it came", async () => {
  await withSpool(["webhook"], (spool) => {
    assert.deepEqual(spool.readDeadLetters(10), []);
    spool.append([entry(['{"n":1}'], ['{"d":1}'])]);
    assert.deepEqual(spool.readDeadLetters(10).map((letter) => letter.line), ['{"d":1}']);
    spool.removeDeadLetters(1);
    assert.deepEqual(spool.readDeadLetters(10), []);
    spool.acknowledge("webhook", 1, { deadLetters: ['{"d":2}'] });
    assert.deepEqual(spool.readDeadLetters(10).map((letter) => letter.line), ['{"d":2}']);
    spool.removeDeadLetters(2);
    assert.deepEqual(spool.readDeadLetters(10), []);
    spool.appendDeadLetters(['{"d":3}']);
    assert.deepEqual(spool.readDeadLetters(10).map((letter) => letter.line), ['{"d":3}']);
  });
});

Deno.test("append is one transaction: a failure leaves nothing behind", async () => {
  await withSpool(["stdout"], (spool) => {
    const bad = {
      records: ['{"n":1}', null as unknown as string],
      deadLetters: [],
      receivedAt: 1,
      topic: TOPIC,
    };
    assert.throws(() => spool.append([entry(['{"n":0}']), bad]));
    assert.equal(spool.pending("stdout"), 0);
    assert.equal(spool.bytes, 0);
    spool.append([entry(['{"n":2}'])]);
    assert.deepEqual(spool.read("stdout", 10).map((record) => record.id), [1]);
  });
});

Deno.test("changed() wakes on append, acknowledge and removal", async () => {
  await withSpool(["stdout"], async (spool) => {
    let woken = spool.changed();
    spool.append([entry(['{"n":1}'], ['{"d":1}'])]);
    await woken;
    woken = spool.changed();
    spool.acknowledge("stdout", 1);
    await woken;
    woken = spool.changed();
    spool.removeDeadLetters(1);
    await woken;
  });
});

Deno.test("changed() resolves when its signal aborts or the spool closes", async () => {
  await withSpool(["stdout"], async (spool) => {
    const controller = new AbortController();
    const woken = spool.changed(controller.signal);
    controller.abort();
    await woken;
    await spool.changed(controller.signal); // already aborted: resolves at once
    const onClose = spool.changed();
    spool.close();
    await onClose;
  });
});

Deno.test("open names the path when the database cannot be opened", () => {
  assert.throws(
    () => Spool.open({ path: "/nonexistent-dir/spool.db", sinks: ["stdout"], maxBytes: 1 }),
    /Cannot open the spool database \/nonexistent-dir\/spool\.db: .*folder exists/,
  );
});

Deno.test("a second spool on the same file is refused while the first is open", async () => {
  await withSpool(["stdout"], (_spool, path) => {
    assert.throws(
      () => Spool.open({ path, sinks: ["stdout"], maxBytes: 1 }),
      /Cannot open the spool database .*locked.*same DATA_DIR/,
    );
  });
});

Deno.test("open refuses an empty sink list", () => {
  assert.throws(
    () => Spool.open({ path: "/tmp/never.db", sinks: [], maxBytes: 1 }),
    /without sinks/,
  );
});

/**
 * Opens a spool in a process of its own, appends three records, acknowledges
 * the first two for "file", then does `then` and exits without closing the
 * spool: a crash, as far as the database can tell. `check` gets the spool
 * opened again.
 */
async function crashAfterAcknowledging(
  then: string,
  check: (spool: Spool) => void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "spool_test_" });
  const path = `${dir}/spool.db`;
  try {
    const spoolModule = new URL("../src/spool.ts", import.meta.url).href;
    const code = `
      import { Spool } from ${JSON.stringify(spoolModule)};
      const spool = Spool.open({ path: ${JSON.stringify(path)}, sinks: ["file"], maxBytes: 1e6 });
      const entry = (n) => ({ records: [JSON.stringify({ n })], deadLetters: [], receivedAt: 1, topic: "t" });
      spool.append([entry(1), entry(2), entry(3)]);
      await spool.sync();
      spool.acknowledge("file", 2);
      ${then}
      Deno.exit(0);
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", code],
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const spool = Spool.open({ path, sinks: ["file"], maxBytes: 1e6 });
    try {
      check(spool);
    } finally {
      spool.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("an acknowledgement is written with the next append", async () => {
  await crashAfterAcknowledging("spool.append([entry(4)]); await spool.sync();", (spool) => {
    assert.deepEqual(texts(spool, "file"), ['{"n":3}', '{"n":4}']);
  });
});

Deno.test("with nothing else to write, an acknowledgement is written within a fraction of a second", async () => {
  await crashAfterAcknowledging(
    "await new Promise((resolve) => setTimeout(resolve, 300)); await spool.sync();",
    (spool) => {
      assert.deepEqual(texts(spool, "file"), ['{"n":3}']);
      assert.equal(spool.bytes, utf8Length('{"n":3}') + utf8Length("t"));
    },
  );
});

Deno.test("a crash right after an acknowledgement hands those records out again: at least once, never lost", async () => {
  await crashAfterAcknowledging("", (spool) => {
    assert.deepEqual(texts(spool, "file"), ['{"n":1}', '{"n":2}', '{"n":3}']);
    assert.equal(spool.bytes, 3 * (utf8Length('{"n":1}') + utf8Length("t")), "all three count");
  });
});

Deno.test("closing writes the acknowledgements that waited", async () => {
  await withSpool(["file"], (spool, path) => {
    spool.append([entry(['{"n":1}']), entry(['{"n":2}'])]);
    spool.acknowledge("file", 1);
    spool.close();
    const reopened = Spool.open({ path, sinks: ["file"], maxBytes: 1e6 });
    try {
      assert.deepEqual(texts(reopened, "file"), ['{"n":2}']);
      assert.equal(reopened.bytes, utf8Length('{"n":2}') + utf8Length(TOPIC));
    } finally {
      reopened.close();
    }
  });
});
