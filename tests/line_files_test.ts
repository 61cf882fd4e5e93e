import assert from "node:assert/strict";
import { DamagedLinesError, LineFiles } from "../src/line_files.ts";
import { tempDir } from "./_helpers/files.ts";

const encoder = new TextEncoder();

Deno.test("lines appended are read back as written, each chunk from where it starts", async () => {
  await using dir = await tempDir();
  const files = LineFiles.open(`${dir}/spool.db-lines`);
  try {
    const first = files.append(encoder.encode('{"n":1}\n'));
    const second = files.append(encoder.encode('{"n":2}\n{"n":3}\n'));
    await files.sync();
    assert.deepEqual([first.file, first.offset, second.file, second.offset], [1, 0, 1, 8]);
    assert.equal(new TextDecoder().decode(files.read(second, 16)), '{"n":2}\n{"n":3}\n');
    assert.equal(
      await Deno.readTextFile(`${dir}/spool.db-lines/00000001.jsonl`),
      '{"n":1}\n{"n":2}\n{"n":3}\n',
      "the file is plain JSON Lines",
    );
  } finally {
    files.close();
  }
});

Deno.test("after a reopen, appends go to a new file and the old one is still read", async () => {
  await using dir = await tempDir();
  const folder = `${dir}/spool.db-lines`;
  const before = LineFiles.open(folder);
  const old = before.append(encoder.encode('{"n":1}\n'));
  before.close();
  const files = LineFiles.open(folder);
  try {
    assert.equal(files.append(encoder.encode('{"n":2}\n')).file, 2);
    assert.deepEqual(files.numbers, [1, 2]);
    assert.equal(new TextDecoder().decode(files.read(old, 8)), '{"n":1}\n');
  } finally {
    files.close();
  }
});

Deno.test("lines the disk did not keep are reported as damaged, whether cut short, changed or gone", async () => {
  await using dir = await tempDir();
  const folder = `${dir}/spool.db-lines`;
  const files = LineFiles.open(folder);
  try {
    const place = files.append(encoder.encode('{"n":1}\n{"n":2}\n'));
    const path = `${folder}/00000001.jsonl`;
    await Deno.writeTextFile(path, '{"n":1}\n{"n":3}\n');
    assert.throws(() => files.read(place, 16), DamagedLinesError);
    assert.throws(() => files.read(place, 16), /are not those written \(CRC-32 differs\)/);
    await Deno.truncate(path, 10);
    assert.throws(() => files.read(place, 16), /ends at byte 10, before the 16 bytes from 0/);
    files.close();
    await Deno.remove(path);
    const reopened = LineFiles.open(folder);
    try {
      assert.throws(() => reopened.read(place, 16), /00000001\.jsonl is missing/);
    } finally {
      reopened.close();
    }
  } finally {
    files.close();
  }
});

Deno.test("removed files are deleted, and appends after that go to a new file", async () => {
  await using dir = await tempDir();
  const folder = `${dir}/spool.db-lines`;
  const before = LineFiles.open(folder);
  before.append(encoder.encode('{"n":1}\n'));
  before.close();
  const files = LineFiles.open(folder);
  try {
    files.append(encoder.encode('{"n":2}\n'));
    files.remove([1, 2]);
    assert.deepEqual(files.numbers, []);
    assert.deepEqual([...Deno.readDirSync(folder)], []);
    assert.equal(files.append(encoder.encode('{"n":3}\n')).file, 3);
  } finally {
    files.close();
  }
});
