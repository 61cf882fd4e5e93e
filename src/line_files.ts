/**
 * Where the spool keeps the JSON Lines of large chunks: append-only files in
 * a folder beside the database (`spool.db-lines/00000001.jsonl`, …), each
 * chunk written with one call instead of a B-tree page at a time, and each
 * byte written once instead of twice (WAL, then checkpoint). The database row
 * of such a chunk says where its lines are and holds their CRC-32. Files are
 * synced with the WAL ({@linkcode LineFiles.sync}), and removed by the spool
 * once every chunk in them is delivered and that is on disk.
 * @module
 */

import { dirname, join } from "node:path";
import { crc32 } from "node:zlib";
import { getLogger } from "@logtape/logtape";

const logger = getLogger(["gridrelay", "spool"]);

/** A file takes no new chunk once it holds this many bytes; the next one starts a new file. */
const FILE_MAX_BYTES = 16 * 2 ** 20;

const FILE_NAME = /^(\d{8})\.jsonl$/;

/**
 * Where one chunk's lines are, and their CRC-32.
 *
 * @example
 * ```ts
 * const place: LinesPlace = { file: 1, offset: 0, crc: 1438416925 };
 * ```
 */
export interface LinesPlace {
  /** The file's number: `spool.db-lines/<number, 8 digits>.jsonl`. */
  readonly file: number;
  /** Where in it the lines start. */
  readonly offset: number;
  /** CRC-32 of the lines, checked when they are read back. */
  readonly crc: number;
}

/**
 * Lines read back that are not what was written: the file ends before them,
 * is missing, or their CRC-32 differs (the disk did not keep them).
 *
 * @example
 * ```ts
 * try {
 *   files.read(place, length);
 * } catch (error) {
 *   if (error instanceof DamagedLinesError) console.error(`lost: ${error.message}`);
 * }
 * ```
 */
export class DamagedLinesError extends Error {}

/**
 * The folder of line files.
 *
 * @example
 * ```ts
 * const files = LineFiles.open("./data/spool.db-lines");
 * const place = files.append(new TextEncoder().encode('{"n":1}\n'));
 * await files.sync(); // on disk
 * files.read(place, 8); // the bytes, checked
 * files.close();
 * ```
 */
export class LineFiles {
  readonly #folder: string;
  /** Open handles by file number: the file being appended to, and files read back. */
  readonly #handles = new Map<number, Deno.FsFile>();
  /** Files in the folder, by number. */
  readonly #numbers: Set<number>;
  #current?: { readonly number: number; size: number };
  #nextNumber: number;
  /** Files written since the last sync began, and whether the folder gained a file. */
  readonly #dirty = new Set<number>();
  #folderDirty = false;
  /** The syncs running, if any, settled: a file is deleted only once no sync holds its handle. */
  #syncing?: Promise<unknown>;
  #closed = false;

  private constructor(folder: string, numbers: Set<number>) {
    this.#folder = folder;
    this.#numbers = numbers;
    this.#nextNumber = Math.max(0, ...numbers) + 1;
  }

  /**
   * Opens the folder, creating it if needed. Appends always go to a new file,
   * so a file a crash cut short is never written after.
   */
  static open(folder: string): LineFiles {
    try {
      Deno.mkdirSync(folder);
      // The folder's own entry, so that it survives a power loss with the files in it.
      syncFolder(dirname(folder));
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    const numbers = new Set<number>();
    for (const entry of Deno.readDirSync(folder)) {
      const match = FILE_NAME.exec(entry.name);
      if (entry.isFile && match !== null) numbers.add(Number(match[1]));
    }
    return new LineFiles(folder, numbers);
  }

  /** The numbers of the files in the folder, oldest first. */
  get numbers(): number[] {
    return [...this.#numbers].sort((a, b) => a - b);
  }

  /** The number of the file new chunks go to, if one was started. */
  get current(): number | undefined {
    return this.#current?.number;
  }

  /** Writes `lines` at the end of the current file (synchronously) and says where they are. */
  append(lines: Uint8Array): LinesPlace {
    if (this.#current === undefined || this.#current.size >= FILE_MAX_BYTES) this.#startFile();
    const current = this.#current!;
    const file = this.#handles.get(current.number)!;
    const offset = current.size;
    this.#dirty.add(current.number);
    try {
      for (let written = 0; written < lines.byteLength;) {
        written += file.writeSync(lines.subarray(written));
      }
    } catch (error) {
      // Part of it may be there: the next chunk goes to a new file, so every offset stays true.
      this.#current = undefined;
      throw error;
    }
    current.size += lines.byteLength;
    return { file: current.number, offset, crc: crc32(lines) };
  }

  /** The `length` bytes at `place`, checked against its CRC-32; throws {@linkcode DamagedLinesError}. */
  read(place: LinesPlace, length: number): Uint8Array {
    const path = this.#path(place.file);
    let file: Deno.FsFile;
    try {
      file = this.#handle(place.file);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      throw new DamagedLinesError(`${path} is missing`);
    }
    const bytes = new Uint8Array(length);
    file.seekSync(place.offset, Deno.SeekMode.Start);
    for (let read = 0; read < length;) {
      const count = file.readSync(bytes.subarray(read));
      if (count === null || count === 0) {
        throw new DamagedLinesError(
          `${path} ends at byte ${
            place.offset + read
          }, before the ${length} bytes from ${place.offset}`,
        );
      }
      read += count;
    }
    if (crc32(bytes) !== place.crc) {
      throw new DamagedLinesError(
        `the ${length} bytes from ${place.offset} in ${path} are not those written (CRC-32 differs)`,
      );
    }
    return bytes;
  }

  /**
   * `fdatasync`s every file written since the last sync began, and the
   * folder if it gained a file; runs off the main thread. Resolves at once
   * when nothing was written.
   */
  sync(): Promise<void> {
    // One at a time: a sync must not resolve while an earlier one still holds files it took.
    const run = (this.#syncing ?? Promise.resolve()).then(() => this.#syncDirty());
    const settled: Promise<void> = run.then(() => {}, () => {}).then(() => {
      if (this.#syncing === settled) this.#syncing = undefined;
    });
    this.#syncing = settled;
    return run;
  }

  /** Syncs what was written, and the folder, on this thread (when the spool closes). */
  syncNow(): void {
    for (const number of this.#dirty) this.#handles.get(number)?.syncDataSync();
    if (this.#folderDirty) syncFolder(this.#folder);
    this.#dirty.clear();
    this.#folderDirty = false;
  }

  #syncDirty(): Promise<void> {
    if (this.#closed || (this.#dirty.size === 0 && !this.#folderDirty)) return Promise.resolve();
    const numbers = [...this.#dirty];
    const folder = this.#folderDirty;
    this.#dirty.clear();
    this.#folderDirty = false;
    // Every one to its end, failed or not, so that the next sync never overlaps this one.
    return Promise.allSettled([
      ...numbers.map((number) => this.#handles.get(number)!.syncData()),
      ...(folder ? [syncFolderAsync(this.#folder)] : []),
    ]).then((results) => {
      const failed = results.find((result) => result.status === "rejected");
      if (failed === undefined) return;
      // Not on disk, as far as anyone knows (the spool stops acknowledging: see WalSync.fail).
      for (const number of numbers) if (this.#handles.has(number)) this.#dirty.add(number);
      this.#folderDirty ||= folder;
      throw failed.reason;
    });
  }

  /** No more chunks go to file `number`: the next append starts a new file. */
  retire(number: number): void {
    if (this.#current?.number === number) this.#current = undefined;
  }

  /**
   * Deletes the files `numbers` (their chunks are all delivered), after any
   * sync that is running; the file being appended to is first retired. A
   * file that cannot be deleted is logged, not thrown.
   */
  remove(numbers: readonly number[]): void {
    if (numbers.length === 0) return;
    for (const number of numbers) this.retire(number);
    const doRemove = () => {
      for (const number of numbers) {
        this.#handles.get(number)?.close();
        this.#handles.delete(number);
        this.#dirty.delete(number);
        this.#numbers.delete(number);
        try {
          Deno.removeSync(this.#path(number));
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) continue;
          logger.warn(
            "Could not delete the delivered spool file {path}: {error}; delete it by hand once the worker has stopped",
            { path: this.#path(number), error },
          );
        }
      }
    };
    if (this.#syncing === undefined || this.#closed) doRemove();
    else void this.#syncing.then(doRemove);
  }

  /** Closes every handle. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const file of this.#handles.values()) file.close();
    this.#handles.clear();
  }

  #startFile(): void {
    const number = this.#nextNumber++;
    const file = Deno.openSync(this.#path(number), { read: true, append: true, createNew: true });
    this.#handles.set(number, file);
    this.#numbers.add(number);
    this.#current = { number, size: 0 };
    this.#folderDirty = true;
  }

  #handle(number: number): Deno.FsFile {
    let file = this.#handles.get(number);
    if (file === undefined) {
      file = Deno.openSync(this.#path(number), { read: true });
      this.#handles.set(number, file);
    }
    return file;
  }

  #path(number: number): string {
    return join(this.#folder, `${String(number).padStart(8, "0")}.jsonl`);
  }
}

/** `fsync`s a folder, so the entries created in it survive a power loss. */
function syncFolder(path: string): void {
  using folder = Deno.openSync(path, { read: true });
  folder.syncSync();
}

async function syncFolderAsync(path: string): Promise<void> {
  using folder = await Deno.open(path, { read: true });
  await folder.sync();
}
