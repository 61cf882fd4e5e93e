import assert from "node:assert/strict";
import { createFileSink, JsonLinesFile } from "../sinks/file.ts";
import { parseRecord } from "../src/record.ts";
import { rawJSON } from "../src/raw_json.ts";

const signal = new AbortController().signal;

async function withDir(test: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sinks_file_test_" });
  try {
    await test(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

Deno.test("the file sink creates its folder and appends one JSON line per record", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/nested/deeper/readings.jsonl`;
    const sink = await createFileSink({ path });
    try {
      assert.equal(sink.name, "file");
      await sink.write([{ n: 1 }, { n: 2 }], signal);
      await sink.write([{ n: 3 }], signal);
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":2}\n{"n":3}\n');
  });
});

Deno.test("the file sink appends to what an earlier run wrote", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    await Deno.writeTextFile(path, '{"n":0}\n');
    const sink = await createFileSink({ path, name: "archive" });
    try {
      assert.equal(sink.name, "archive");
      await sink.write([{ n: 1 }], signal);
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), '{"n":0}\n{"n":1}\n');
  });
});

Deno.test("the file sink writes numbers digit for digit", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const spooled =
      '{"data":{"dse-1":{"E":18446744073709551615,"V_L3":229.70000000000002,"x":1.50}}}';
    const sink = await createFileSink({ path });
    try {
      await sink.write([parseRecord(spooled), { E: rawJSON("18446744073709551615") }], signal);
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), `${spooled}\n{"E":18446744073709551615}\n`);
  });
});

Deno.test("the file rotates before it would exceed maxBytes and keeps maxFiles rotated files", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    // Each line is 10 bytes with its newline; 30 bytes hold three.
    const lines = Array.from({ length: 14 }, (_, i) => `{"n":${String(i).padStart(3, "0")}}`);
    const file = new JsonLinesFile(path, { maxBytes: 30, maxFiles: 2 });
    try {
      await file.append(lines.slice(0, 2));
      await file.append(lines.slice(2, 9)); // fills the live file, rotates twice in one batch
      await file.append(lines.slice(9));
    } finally {
      await file.close();
    }
    const read = (suffix: string) => readIfPresent(`${path}${suffix}`);
    assert.equal(await read(".3"), undefined, "no more than maxFiles rotated files");
    assert.equal(await read(".2"), lines.slice(6, 9).join("\n") + "\n");
    assert.equal(await read(".1"), lines.slice(9, 12).join("\n") + "\n");
    assert.equal(await read(""), lines.slice(12).join("\n") + "\n");
  });
});

Deno.test("a line larger than maxBytes gets a file of its own", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const file = new JsonLinesFile(path, { maxBytes: 10, maxFiles: 3 });
    try {
      await file.append(["small"]);
      await file.append(["a line far longer than ten bytes", "next"]);
    } finally {
      await file.close();
    }
    assert.equal(await Deno.readTextFile(`${path}.2`), "small\n");
    assert.equal(await Deno.readTextFile(`${path}.1`), "a line far longer than ten bytes\n");
    assert.equal(await Deno.readTextFile(path), "next\n");
  });
});

Deno.test("with maxFiles 0 rotation keeps no old file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const file = new JsonLinesFile(path, { maxBytes: 6, maxFiles: 0 });
    try {
      await file.append(["one", "two"]);
    } finally {
      await file.close();
    }
    assert.equal(await Deno.readTextFile(path), "two\n");
    assert.equal(await readIfPresent(`${path}.1`), undefined);
  });
});

Deno.test("opening cuts a partial last line left by a crash in mid-write", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    await Deno.writeTextFile(path, '{"n":1}\n{"n":2}\n{"n":3,"da');
    const sink = await createFileSink({ path });
    try {
      assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":2}\n');
      await sink.write([{ n: 3 }], signal);
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), '{"n":1}\n{"n":2}\n{"n":3}\n');
  });
});

Deno.test("opening empties a file whose only line is partial, even past one read chunk", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    await Deno.writeTextFile(path, `{"blob":"${"x".repeat(200_000)}`);
    const file = new JsonLinesFile(path);
    try {
      await file.open();
    } finally {
      await file.close();
    }
    assert.equal(await Deno.readTextFile(path), "");
  });
});

Deno.test("a write whose signal has aborted is refused before touching the file", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const sink = await createFileSink({ path });
    try {
      await assert.rejects(sink.write([{ n: 1 }], AbortSignal.abort()), { name: "AbortError" });
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), "");
  });
});

Deno.test("invalid rotation limits are refused with the path", () => {
  assert.throws(() => new JsonLinesFile("/x/r.jsonl", { maxBytes: 0 }), /\/x\/r\.jsonl.*maxBytes/);
  assert.throws(() => new JsonLinesFile("/x/r.jsonl", { maxFiles: -1 }), /maxFiles/);
});

Deno.test("a missing write permission names the path and the flag to grant", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/out/readings.jsonl`;
    const script = `${dir}/probe.ts`;
    await Deno.writeTextFile(
      script,
      `import { createFileSink } from ${
        JSON.stringify(new URL("../sinks/file.ts", import.meta.url).href)
      };
      try { await createFileSink({ path: ${JSON.stringify(path)} }); }
      catch (error) { console.log(error.message); }`,
    );
    const config = new URL("../deno.json", import.meta.url).pathname;
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        "--no-check",
        "--allow-read",
        "--config",
        config,
        script,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const message = new TextDecoder().decode(output.stdout).trim();
    assert.match(
      message,
      new RegExp(`^Cannot open ${path}: `),
      new TextDecoder().decode(output.stderr),
    );
    assert.match(message, new RegExp(`--allow-write=${dir}/out`));
  });
});

Deno.test("the file sink writes spooled JSON Lines bytes as they are", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const sink = await createFileSink({ path });
    const lines = '{"E":18446744073709551615,"v":"µ"}\n{"n":2}\n';
    try {
      await sink.writeLines!(new TextEncoder().encode(lines), signal);
    } finally {
      await sink.close?.();
    }
    assert.equal(await Deno.readTextFile(path), lines);
  });
});

Deno.test("JSON Lines bytes that do not end with a newline are refused, the file untouched", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/readings.jsonl`;
    const file = new JsonLinesFile(path);
    try {
      await assert.rejects(
        file.appendLines(new TextEncoder().encode('{"n":1}\n{"n":2}')),
        /must end with a newline/,
      );
    } finally {
      await file.close();
    }
    assert.equal(await readIfPresent(path), undefined);
  });
});

Deno.test("the file sink takes up to 4000 records a write: one sync covers what piled up", async () => {
  await withDir(async (dir) => {
    const sink = await createFileSink({ path: `${dir}/readings.jsonl` });
    try {
      assert.equal(sink.batchSize, 4000);
    } finally {
      await sink.close?.();
    }
  });
});
