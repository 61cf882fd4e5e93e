/**
 * Timestamps as RFC 3339 text in UTC with a `+00:00` offset: a payload's `t`
 * (Unix epoch seconds, converted from its exact decimal text so rounding to
 * the microsecond is correct) and the worker's own millisecond clock readings.
 * @module
 */

/** The first second of the year 10000, which RFC 3339's four-digit year cannot hold. */
const END_SECONDS = 253402300800;

/**
 * `t` as RFC 3339 text, or why it cannot be one.
 *
 * @example
 * ```ts
 * const time: EpochTime = { ok: true, text: "2021-07-06T12:55:00+00:00" };
 * ```
 */
export type EpochTime =
  | { readonly ok: true; readonly text: string }
  | { readonly ok: false; readonly problem: string };

/**
 * Converts the JSON number text of Unix epoch seconds to RFC 3339. Whole
 * seconds carry no fraction; any other value carries exactly six fraction
 * digits, rounded half up to the microsecond. Valid values are 0 up to (not
 * including) 253402300800, the year 10000; a value that rounds up to it is
 * refused too, since its time cannot be written.
 *
 * @example
 * ```ts
 * formatEpochSeconds("1625576100"); // { ok: true, text: "2021-07-06T12:55:00+00:00" }
 * formatEpochSeconds("1625576100.25"); // { ok: true, text: "2021-07-06T12:55:00.250000+00:00" }
 * ```
 */
export function formatEpochSeconds(numberText: string): EpochTime {
  // Fast path: a plain integer of at most 12 digits, the usual case.
  if (numberText.length <= 12 && /^(?:0|[1-9][0-9]*)$/.test(numberText)) {
    const seconds = Number(numberText);
    if (seconds >= END_SECONDS) return outOfRange(numberText);
    return { ok: true, text: formatSeconds(seconds) };
  }
  const match = /^(-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?)([0-9]+))?$/.exec(numberText);
  if (!match) return { ok: false, problem: `${clip(numberText)} is not a number` };
  const [, sign, integerDigits, fractionDigits = "", exponentSign, exponentDigits = "0"] = match;

  // The value is 0.<digits> × 10^point once leading zeros are gone.
  let digits = integerDigits + fractionDigits;
  let point = integerDigits.length + exponentValue(exponentSign, exponentDigits);
  let first = 0;
  while (first < digits.length && digits.charCodeAt(first) === 0x30) first++;
  let last = digits.length;
  while (last > first && digits.charCodeAt(last - 1) === 0x30) last--;
  digits = digits.slice(first, last);
  point -= first;

  if (digits === "") return { ok: true, text: formatSeconds(0) };
  if (sign === "-") return outOfRange(numberText);
  // At least 10^12 once the point sits past the twelfth digit: far beyond the year 9999.
  if (point > 12) return outOfRange(numberText);

  let seconds = point <= 0 ? 0 : Number(digits.slice(0, point).padEnd(point, "0"));
  if (seconds >= END_SECONDS) return outOfRange(numberText);
  if (digits.length <= point) return { ok: true, text: formatSeconds(seconds) };

  // Seven fraction digits: six to keep, one to round by. Below 10^-8 nothing is left to round.
  const fraction = point >= 0
    ? digits.slice(point, point + 7)
    : point < -7
    ? ""
    : "0".repeat(-point) + digits.slice(0, 7 + point);
  const seven = fraction.padEnd(7, "0");
  let micros = Number(seven.slice(0, 6)) + (seven.charCodeAt(6) >= 0x35 ? 1 : 0);
  if (micros === 1_000_000) {
    seconds++;
    micros = 0;
    if (seconds >= END_SECONDS) {
      return {
        ok: false,
        problem: `${clip(numberText)} rounds to the year 10000, which RFC 3339 cannot write`,
      };
    }
  }
  return {
    ok: true,
    text: formatSeconds(seconds, String(micros).padStart(6, "0")),
  };
}

/**
 * A millisecond timestamp (as from `Date.now()`) as RFC 3339 in UTC with a
 * `+00:00` offset and millisecond precision (always three digits). Throws a
 * `RangeError` for a value that is not a time in the years 0000-9999: that is
 * a programming error, not bad data.
 *
 * @example
 * ```ts
 * formatTimestamp(1625576100123); // "2021-07-06T12:55:00.123+00:00"
 * ```
 */
export function formatTimestamp(ms: number): string {
  // 0000-01-01 to 9999-12-31: the years RFC 3339 can write.
  if (!(ms >= -62167219200000 && ms < 253402300800000)) {
    throw new RangeError(
      `timestamp ${ms} is not a time in milliseconds since the Unix epoch between the years 0 and 9999; ` +
        "pass a value such as Date.now()",
    );
  }
  const whole = Math.floor(ms);
  const days = Math.floor(whole / 86400000);
  const msOfDay = whole - days * 86400000;
  return formatDateTime(days, Math.floor(msOfDay / 1000)) + "." +
    String(msOfDay % 1000).padStart(3, "0") + "+00:00";
}

function formatSeconds(seconds: number, micros?: string): string {
  const text = formatDateTime(Math.floor(seconds / 86400), seconds % 86400);
  return micros === undefined ? text + "+00:00" : text + "." + micros + "+00:00";
}

/**
 * `YYYY-MM-DDTHH:MM:SS` for a day count since 1970-01-01 (years 0000-9999)
 * and a second of that day. Arithmetic, not `Date`, which costs ten times as
 * much on this hot path. The calendar algorithm is Howard Hinnant's
 * `civil_from_days`.
 */
function formatDateTime(days: number, secondOfDay: number): string {
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const dayOfEra = z - era * 146097;
  const yearOfEra = Math.floor(
    (dayOfEra - Math.floor(dayOfEra / 1460) + Math.floor(dayOfEra / 36524) -
      Math.floor(dayOfEra / 146096)) / 365,
  );
  const dayOfYear = dayOfEra -
    (365 * yearOfEra + Math.floor(yearOfEra / 4) - Math.floor(yearOfEra / 100));
  const shiftedMonth = Math.floor((5 * dayOfYear + 2) / 153);
  const day = dayOfYear - Math.floor((153 * shiftedMonth + 2) / 5) + 1;
  const month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9;
  const year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0);
  const hour = Math.floor(secondOfDay / 3600);
  const minute = Math.floor(secondOfDay / 60) % 60;
  return String(year).padStart(4, "0") + "-" + two(month) + "-" + two(day) + "T" + two(hour) +
    ":" + two(minute) + ":" + two(secondOfDay % 60);
}

function two(n: number): string {
  return n < 10 ? "0" + n : String(n);
}

function exponentValue(sign: string, digits: string): number {
  // Past 15 digits the exact exponent no longer matters, only its direction.
  let first = 0;
  while (first < digits.length - 1 && digits.charCodeAt(first) === 0x30) first++;
  const magnitude = digits.length - first > 15 ? 1e15 : Number(digits.slice(first));
  return sign === "-" ? -magnitude : magnitude;
}

function outOfRange(numberText: string): EpochTime {
  return {
    ok: false,
    problem: `${clip(numberText)} is outside 0 to 253402300799 (1970 to 9999)`,
  };
}

function clip(text: string): string {
  return text.length > 40 ? text.slice(0, 37) + "..." : text;
}
