import assert from "node:assert/strict";
import { createSinks, SinkConfigError } from "../sinks/registry.ts";
import type { Sink } from "../sinks/sink.ts";
import type { StdoutOutput } from "../sinks/stdout.ts";
import { received } from "./fixtures/sinks/object_sink.ts";

// Module paths in these tests are relative to the repository root, as SINKS is to the cwd.
const cwd = new URL("..", import.meta.url).pathname;
const fixture = (name: string) => `./tests/fixtures/sinks/${name}`;
const signal = new AbortController().signal;

async function closeAll(sinks: Sink[]): Promise<void> {
  for (const sink of sinks) await sink.close?.();
}

async function assertConfigError(names: string[], pattern: RegExp): Promise<void> {
  await assert.rejects(createSinks(names, { cwd }), (error: unknown) => {
    assert.ok(error instanceof SinkConfigError, String(error));
    assert.match(error.message, pattern);
    return true;
  });
}

Deno.test("builtins stdout and file are created by name with their settings", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sinks_registry_test_" });
  const written: string[] = [];
  const output: StdoutOutput = {
    write(bytes) {
      written.push(new TextDecoder().decode(bytes));
      return Promise.resolve(bytes.length);
    },
  };
  const sinks = await createSinks(["stdout", "file"], {
    stdoutFormat: "jsonl",
    stdoutOutput: output,
    filePath: `${dir}/out/readings.jsonl`,
    fileMaxBytes: 1024,
    fileMaxFiles: 1,
  });
  try {
    assert.deepEqual(sinks.map((sink) => sink.name), ["stdout", "file"]);
    for (const sink of sinks) await sink.write([{ n: 1 }], signal);
    assert.deepEqual(written, ['{"n":1}\n']);
    assert.equal(await Deno.readTextFile(`${dir}/out/readings.jsonl`), '{"n":1}\n');
  } finally {
    await closeAll(sinks);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a custom module's default export can be the sink itself", async () => {
  const sinks = await createSinks([fixture("object_sink.ts")], { cwd });
  assert.deepEqual(sinks.map((sink) => sink.name), ["collector"]);
  await sinks[0].write([{ n: 7 }], signal);
  assert.deepEqual(received.at(-1), { n: 7 });
});

Deno.test("a custom module's default export can be a sync or an async factory", async () => {
  const sinks = await createSinks([fixture("sync_factory.ts"), fixture("async_factory.ts")], {
    cwd,
  });
  assert.deepEqual(sinks.map((sink) => sink.name), ["sync-made", "async-made"]);
  await closeAll(sinks);
});

Deno.test("a custom module can be given as an absolute path or a file URL", async () => {
  const path = `${cwd}tests/fixtures/sinks/sync_factory.ts`;
  const [byPath] = await createSinks([path]);
  assert.equal(byPath.name, "sync-made");
  const [byUrl] = await createSinks([new URL(`file://${path}`).href]);
  assert.equal(byUrl.name, "sync-made");
});

Deno.test("a missing module is a SinkConfigError naming its path", async () => {
  await assertConfigError(
    [fixture("does_not_exist.ts")],
    /Cannot load the sink module \.\/tests\/fixtures\/sinks\/does_not_exist\.ts \(file:\/\/.*does_not_exist\.ts\): .*Check the path in SINKS/,
  );
});

Deno.test("a module that fails as it loads is a SinkConfigError saying to fix the module", async () => {
  await assertConfigError(
    [fixture("failing_module.ts")],
    /Cannot load the sink module \.\/tests\/fixtures\/sinks\/failing_module\.ts .*: this sink module fails as it loads\. Fix the module/,
  );
});

Deno.test("a module without a default export is a SinkConfigError naming its path", async () => {
  await assertConfigError(
    [fixture("no_default.ts")],
    /The sink module \.\/tests\/fixtures\/sinks\/no_default\.ts .*has no default export/,
  );
});

Deno.test("a default export without write is a SinkConfigError naming its path", async () => {
  await assertConfigError(
    [fixture("no_write.ts")],
    /The sink from \.\/tests\/fixtures\/sinks\/no_write\.ts .*has no write function/,
  );
});

Deno.test("a factory that throws is a SinkConfigError carrying its message", async () => {
  await assertConfigError(
    [fixture("throwing_factory.ts")],
    /throwing_factory\.ts .*failed to create its sink: MY_SINK_URL is not set/,
  );
});

Deno.test("two sinks with one name are a SinkConfigError naming both", async () => {
  await assertConfigError(
    ["stdout", fixture("named_stdout.ts")],
    /Sinks stdout and \.\/tests\/fixtures\/sinks\/named_stdout\.ts are both named "stdout"/,
  );
});

Deno.test("the sinks created before a failure are closed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sinks_registry_test_" });
  try {
    // The file sink holds an open file; the resource sanitizer fails this test if it leaks.
    await assert.rejects(
      createSinks(["file", fixture("no_write.ts")], { cwd, filePath: `${dir}/r.jsonl` }),
      SinkConfigError,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("webhook is created by name with its settings", async () => {
  const [sink] = await createSinks(["webhook"], {
    webhookUrl: "http://127.0.0.1:9/hook",
    webhookSecret: "s3cret",
    webhookHeaders: { Authorization: "Bearer abc" },
    webhookBatchSize: 20,
    webhookTimeoutMs: 500,
  });
  assert.equal(sink.name, "webhook");
  assert.equal(sink.batchSize, 20);
});

Deno.test("webhook without WEBHOOK_URL is a SinkConfigError naming it", async () => {
  await assertConfigError(["webhook"], /WEBHOOK_URL is missing: SINKS includes webhook/);
});

Deno.test("webhook with an invalid header is a SinkConfigError that hides the value", async () => {
  await assert.rejects(
    createSinks(["webhook"], {
      webhookUrl: "http://127.0.0.1:9/hook",
      webhookHeaders: { Authorization: "Bearer line\nbreak-s3cret" },
    }),
    (error: unknown) => {
      assert.ok(error instanceof SinkConfigError, String(error));
      assert.match(error.message, /The webhook sink cannot start: WEBHOOK_HEADERS has an invalid/);
      assert.doesNotMatch(error.message, /s3cret/);
      return true;
    },
  );
});

Deno.test("a custom sink whose batchSize is not a whole number from 1 is a SinkConfigError", async () => {
  await assertConfigError(
    [fixture("bad_batch_size.ts")],
    /The sink from \.\/tests\/fixtures\/sinks\/bad_batch_size\.ts .*has a batchSize that is not a whole number from 1/,
  );
});

Deno.test("a bare word that is no builtin is an unknown sink", async () => {
  await assertConfigError(["kafka"], /Unknown sink "kafka": expected stdout, file, webhook/);
});

Deno.test("a custom sink whose writeLines is not a function is a SinkConfigError", async () => {
  await assertConfigError(
    [fixture("bad_write_lines.ts")],
    /The sink from \.\/tests\/fixtures\/sinks\/bad_write_lines\.ts .*has a writeLines that is not a function/,
  );
});
