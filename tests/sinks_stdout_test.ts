import assert from "node:assert/strict";
import { createStdoutSink, type StdoutOutput } from "../sinks/stdout.ts";
import { parseRecord } from "../src/record.ts";

const signal = new AbortController().signal;

// Takes at most `chunk` bytes per call, like a pipe that accepts partial writes.
function capture(options: { terminal?: boolean; chunk?: number } = {}) {
  const chunks: Uint8Array[] = [];
  const output: StdoutOutput = {
    write(bytes) {
      const taken = bytes.slice(0, options.chunk ?? bytes.length);
      chunks.push(taken);
      return Promise.resolve(taken.length);
    },
    isTerminal: () => options.terminal ?? false,
  };
  const text = () => chunks.map((chunk) => new TextDecoder().decode(chunk)).join("");
  return { output, text };
}

const SPOOLED = '{"time":"2021-07-06T12:55:00+00:00","data":{"dse-1":{"E":18446744073709551615}}}';

Deno.test("jsonl prints one record per line with the spooled digits", async () => {
  const { output, text } = capture();
  const sink = createStdoutSink({ format: "jsonl", output });
  assert.equal(sink.name, "stdout");
  await sink.write([parseRecord(SPOOLED), { n: 2 }], signal);
  assert.equal(text(), `${SPOOLED}\n{"n":2}\n`);
});

Deno.test("pretty prints indented JSON and keeps exact digits", async () => {
  const { output, text } = capture();
  await createStdoutSink({ format: "pretty", output }).write([parseRecord(SPOOLED)], signal);
  assert.equal(
    text(),
    `{
  "time": "2021-07-06T12:55:00+00:00",
  "data": {
    "dse-1": {
      "E": 18446744073709551615
    }
  }
}
`,
  );
});

Deno.test("auto is pretty on a terminal and JSON Lines otherwise", async () => {
  const terminal = capture({ terminal: true });
  await createStdoutSink({ format: "auto", output: terminal.output }).write([{ n: 1 }], signal);
  assert.equal(terminal.text(), '{\n  "n": 1\n}\n');

  const pipe = capture({ terminal: false });
  await createStdoutSink({ format: "auto", output: pipe.output }).write([{ n: 1 }], signal);
  assert.equal(pipe.text(), '{"n":1}\n');
});

Deno.test("a partial write is continued until the whole batch is out", async () => {
  const { output, text } = capture({ chunk: 3 });
  await createStdoutSink({ format: "jsonl", output }).write([{ n: 1 }, { n: 2 }], signal);
  assert.equal(text(), '{"n":1}\n{"n":2}\n');
});

Deno.test("jsonl writes spooled JSON Lines bytes as they are", async () => {
  const { output, text } = capture({ chunk: 7 });
  const sink = createStdoutSink({ format: "jsonl", output });
  await sink.writeLines!(new TextEncoder().encode(`${SPOOLED}\n{"n":2}\n`), signal);
  assert.equal(text(), `${SPOOLED}\n{"n":2}\n`);
});

Deno.test("pretty takes parsed records only: it has no use for the spooled bytes", () => {
  const { output } = capture({ terminal: true });
  assert.equal(createStdoutSink({ format: "auto", output }).writeLines, undefined);
});
