/**
 * The file sink: records as JSON Lines, appended and `fdatasync`ed before a
 * batch counts as written, with size-based rotation. {@linkcode JsonLinesFile}
 * is the writer itself, shared with the dead-letter writer.
 * @module
 */

import { dirname } from "node:path";
import { getLogger } from "@logtape/logtape";
import { type OutputRecord, recordText } from "../src/record.ts";
import type { Sink } from "./sink.ts";

const logger = getLogger(["gridrelay", "sink", "file"]);

/** Default size at which a JSON Lines file rotates: 100 MiB. */
export const DEFAULT_FILE_MAX_BYTES: number = 100 * 2 ** 20;

/** Default number of rotated files kept beside the live one (`.1` … `.5`). */
export const DEFAULT_FILE_MAX_FILES = 5;

const NEWLINE = 0x0a;
const TAIL_CHUNK_BYTES = 64 * 1024;
const encoder = new TextEncoder();
const MAX_KEPT_BUFFER_BYTES = 4 * 2 ** 20;

/**
 * Rotation limits of a {@linkcode JsonLinesFile}.
 *
 * @example
 * ```ts
 * const rotation: RotationOptions = { maxBytes: 10 * 2 ** 20, maxFiles: 3 };
 * ```
 */
export interface RotationOptions {
  /** The live file rotates before it would exceed this many bytes (default 100 MiB). A single line larger than this gets a file of its own. */
  readonly maxBytes?: number;
  /** Rotated files kept (`<path>.1` newest … `<path>.<maxFiles>` oldest); older ones are deleted. `0` keeps none. Default 5. */
  readonly maxFiles?: number;
}

/**
 * An append-only JSON Lines file that is durable per batch: `append`
 * resolves only after the bytes are written and `fdatasync`ed. Opening it
 * creates its folder and cuts a partial last line left by a crash in
 * mid-write (those lines were never acknowledged, so they come again).
 * Calls are serialised; at most one process may write the file.
 *
 * @example
 * ```ts
 * const file = new JsonLinesFile("./data/dead-letter.jsonl", { maxBytes: 2 ** 20, maxFiles: 2 });
 * await file.append(['{"reason":"not JSON"}']);
 * await file.close();
 * ```
 */
export class JsonLinesFile {
  readonly #path: string;
  readonly #maxBytes: number;
  readonly #maxFiles: number;
  #file?: Deno.FsFile;
  #size = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #buffer = new Uint8Array(0);

  constructor(path: string, options: RotationOptions = {}) {
    const maxBytes = options.maxBytes ?? DEFAULT_FILE_MAX_BYTES;
    const maxFiles = options.maxFiles ?? DEFAULT_FILE_MAX_FILES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes <= 0) {
      throw new RangeError(
        `The JSON Lines file ${path} needs maxBytes to be a positive whole number of bytes, got ${maxBytes}.`,
      );
    }
    if (!Number.isSafeInteger(maxFiles) || maxFiles < 0) {
      throw new RangeError(
        `The JSON Lines file ${path} needs maxFiles to be a whole number from 0, got ${maxFiles}.`,
      );
    }
    this.#path = path;
    this.#maxBytes = maxBytes;
    this.#maxFiles = maxFiles;
  }

  /** The live file's path. */
  get path(): string {
    return this.#path;
  }

  /**
   * Opens the file now, so that a missing permission shows at start-up
   * rather than at the first write. `append` opens it when needed anyway.
   *
   * @example
   * ```ts
   * await new JsonLinesFile("./data/readings.jsonl").open();
   * ```
   */
  open(): Promise<void> {
    return this.#serialised(async () => {
      await this.#opened();
    });
  }

  /**
   * Appends `lines` (each without its `"\n"`), rotating first when the file
   * would grow past `maxBytes`, and resolves once they are on disk. On
   * failure nothing of the batch remains in the live file.
   *
   * @example
   * ```ts
   * await file.append(['{"time":"2021-07-06T12:55:00+00:00","data":{}}']);
   * ```
   */
  append(lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return Promise.resolve();
    return this.#serialised(() => this.#append(this.#encode(lines)));
  }

  /**
   * Appends JSON Lines given as bytes — whole lines, each ended by "\n" — as
   * {@linkcode JsonLinesFile.append} does lines given as text.
   *
   * @example
   * ```ts
   * await file.appendLines(new TextEncoder().encode('{"n":1}\n{"n":2}\n'));
   * ```
   */
  appendLines(lines: Uint8Array): Promise<void> {
    if (lines.length === 0) return Promise.resolve();
    if (lines[lines.length - 1] !== NEWLINE) {
      return Promise.reject(
        new RangeError(`JSON Lines for ${this.#path} must end with a newline`),
      );
    }
    return this.#serialised(() => this.#append(lines));
  }

  /**
   * Closes the file; a later `append` opens it again.
   *
   * @example
   * ```ts
   * await file.close();
   * ```
   */
  close(): Promise<void> {
    return this.#serialised(() => {
      this.#file?.close();
      this.#file = undefined;
      return Promise.resolve();
    });
  }

  // Lines encoded into one buffer that is reused from batch to batch (calls are serialised):
  // joining a batch into one string first would make a large short-lived string per batch.
  #encode(lines: readonly string[]): Uint8Array {
    let buffer = this.#buffer;
    let offset = 0;
    for (const line of lines) {
      // A UTF-16 code unit takes at most 3 bytes in UTF-8; plus the newline.
      const most = line.length * 3 + 1;
      if (buffer.length - offset < most) {
        const grown = new Uint8Array(Math.max(buffer.length * 2, offset + most));
        grown.set(buffer.subarray(0, offset));
        buffer = grown;
      }
      offset += encoder.encodeInto(line, buffer.subarray(offset)).written;
      buffer[offset++] = NEWLINE;
    }
    // Keep a buffer of a usual size, not one an exceptional batch grew.
    this.#buffer = buffer.length <= MAX_KEPT_BUFFER_BYTES ? buffer : new Uint8Array(0);
    return buffer.subarray(0, offset);
  }

  #serialised<T>(work: () => Promise<T>): Promise<T> {
    const result = this.#queue.then(work);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  async #append(buffer: Uint8Array): Promise<void> {
    let file = await this.#opened();
    let start = this.#size;
    try {
      let offset = 0;
      while (offset < buffer.length) {
        let end = endOfFittingLines(buffer, offset, this.#maxBytes - this.#size);
        if (end <= offset) {
          if (this.#size > 0) {
            file = await this.#rotate(file);
            start = 0;
            continue;
          }
          end = buffer.indexOf(NEWLINE, offset) + 1;
        }
        await writeAll(file, buffer.subarray(offset, end));
        this.#size += end - offset;
        offset = end;
      }
      await file.syncData();
    } catch (error) {
      await this.#undo(file, start);
      throw describeFileError(error, this.#path, "write");
    }
  }

  // Cuts what this batch wrote to the live file, so a retry does not leave a duplicate or a
  // partial line; if even that fails, the handle is dropped and the next open repairs the tail.
  async #undo(file: Deno.FsFile, size: number): Promise<void> {
    if (this.#file !== file) return; // a failed rotation already dropped the handle
    try {
      await file.truncate(size);
      this.#size = size;
    } catch (error) {
      logger.warn("Could not cut a failed write from {path}: {error}; it is repaired on reopen", {
        path: this.#path,
        error,
      });
      file.close();
      this.#file = undefined;
    }
  }

  async #rotate(file: Deno.FsFile): Promise<Deno.FsFile> {
    await file.syncData();
    file.close();
    this.#file = undefined;
    if (this.#maxFiles === 0) {
      await Deno.remove(this.#path);
    } else {
      await removeIfPresent(`${this.#path}.${this.#maxFiles}`);
      for (let index = this.#maxFiles - 1; index >= 1; index--) {
        await renameIfPresent(`${this.#path}.${index}`, `${this.#path}.${index + 1}`);
      }
      await Deno.rename(this.#path, `${this.#path}.1`);
    }
    logger.debug("Rotated {path}", { path: this.#path });
    return await this.#opened();
  }

  async #opened(): Promise<Deno.FsFile> {
    if (this.#file) return this.#file;
    let file: Deno.FsFile | undefined;
    try {
      await Deno.mkdir(dirname(this.#path), { recursive: true });
      file = await Deno.open(this.#path, { read: true, append: true, create: true });
      const { size } = await file.stat();
      const end = await endOfLastLine(file, size);
      if (end < size) {
        await file.truncate(end);
        await file.syncData();
        logger.warn(
          "Cut {bytes} bytes of a partial last line from {path}: a write was cut short, and its records will be written again",
          { bytes: size - end, path: this.#path },
        );
      }
      this.#file = file;
      this.#size = end;
      return file;
    } catch (error) {
      file?.close();
      throw describeFileError(error, this.#path, "open");
    }
  }
}

/**
 * Options of {@linkcode createFileSink}.
 *
 * @example
 * ```ts
 * const options: FileSinkOptions = { path: "./data/readings.jsonl", maxBytes: 100 * 2 ** 20, maxFiles: 5 };
 * ```
 */
export interface FileSinkOptions extends RotationOptions {
  /** The JSON Lines file, e.g. `FILE_PATH`; its folder is created. */
  readonly path: string;
  /** The sink's name (default `"file"`). */
  readonly name?: string;
}

/**
 * Creates the file sink and opens its file, so a missing permission fails
 * start-up with a message naming the path and the permission to grant.
 *
 * @example
 * ```ts
 * const sink = await createFileSink({ path: "./data/readings.jsonl" });
 * await sink.write([{ time: "2021-07-06T12:55:00+00:00", data: {} }], AbortSignal.timeout(5000));
 * await sink.close?.();
 * ```
 */
export async function createFileSink(options: FileSinkOptions): Promise<Sink> {
  const file = new JsonLinesFile(options.path, options);
  await file.open();
  return new FileSink(options.name ?? "file", file);
}

class FileSink implements Sink {
  readonly name: string;
  // Appending is cheap and the sync per write is not: take what has piled up, up to a limit.
  readonly batchSize = 4000;
  readonly #file: JsonLinesFile;

  constructor(name: string, file: JsonLinesFile) {
    this.name = name;
    this.#file = file;
  }

  async write(records: OutputRecord[], signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    await this.#file.append(records.map(recordText));
  }

  // What the sink runner calls: the spooled lines are the file's lines, nothing to parse.
  async writeLines(lines: Uint8Array, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    await this.#file.appendLines(lines);
  }

  async writeTexts(texts: string[], signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    await this.#file.append(texts);
  }

  close(): Promise<void> {
    return this.#file.close();
  }
}

// The end of the longest run of whole lines from `offset` that fits in `room` bytes; `offset`
// when not even one line fits.
function endOfFittingLines(buffer: Uint8Array, offset: number, room: number): number {
  if (offset + room >= buffer.length) return buffer.length;
  // Checked first because a negative fromIndex would make lastIndexOf count from the end.
  if (room <= 0) return offset;
  return Math.max(offset, buffer.lastIndexOf(NEWLINE, offset + room - 1) + 1);
}

/**
 * Writes of at most this many bytes are made on the calling thread: copying a
 * few kilobytes into the page cache takes microseconds, less than handing the
 * write to Deno's blocking pool and back (two thread wake-ups). At a steady
 * 1 000 msg/s most writes are a few records, and such hand-offs had taken
 * about 7 % of the main thread. The sync that follows, which waits for the
 * disk, stays off the thread. (A write into the page cache rarely blocks; when
 * the disk is so slow that it does, the spool's own writes on this thread
 * block as well.)
 */
const SMALL_WRITE_BYTES = 64 * 1024;

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let written = 0;
  if (bytes.length <= SMALL_WRITE_BYTES) {
    while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
    return;
  }
  while (written < bytes.length) written += await file.write(bytes.subarray(written));
}

// The offset just past the last "\n" in the file (0 when it has none), reading backwards.
async function endOfLastLine(file: Deno.FsFile, size: number): Promise<number> {
  let end = size;
  const chunk = new Uint8Array(TAIL_CHUNK_BYTES);
  while (end > 0) {
    const start = Math.max(0, end - TAIL_CHUNK_BYTES);
    const view = chunk.subarray(0, end - start);
    await file.seek(start, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < view.length) {
      const read = await file.read(view.subarray(filled));
      if (read === null) break;
      filled += read;
    }
    const newline = view.subarray(0, filled).lastIndexOf(NEWLINE);
    if (newline >= 0) return start + newline + 1;
    end = start;
  }
  return 0;
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

async function renameIfPresent(from: string, to: string): Promise<void> {
  try {
    await Deno.rename(from, to);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/**
 * Turns a file-system error into one that names the path and what to grant.
 *
 * @example
 * ```ts
 * throw describeFileError(error, "/var/lib/gridrelay/readings.jsonl", "open");
 * ```
 */
export function describeFileError(error: unknown, path: string, action: string): Error {
  if (error instanceof FileAccessError) return error;
  const folder = dirname(path);
  const reason = (error instanceof Error ? error.message : String(error)).replace(/\.$/, "");
  if (error instanceof Deno.errors.NotCapable) {
    return new FileAccessError(
      `Cannot ${action} ${path}: the worker lacks Deno's permission (${reason}); run it with deno task start, which grants what the configuration needs, or add --allow-read=${folder} --allow-write=${folder} (a compiled binary must be rebuilt with deno task compile).`,
      { cause: error },
    );
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return new FileAccessError(
      `Cannot ${action} ${path}: the operating system denies it (${reason}); let the worker's user read and write ${folder}.`,
      { cause: error },
    );
  }
  return new FileAccessError(`Cannot ${action} ${path}: ${reason}.`, { cause: error });
}

// Marks an error already described, so a nested failure is not wrapped twice.
class FileAccessError extends Error {
  override name = "FileAccessError";
}
