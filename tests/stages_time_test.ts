import assert from "node:assert/strict";
import { formatEpochSeconds, formatTimestamp } from "../src/stages/time.ts";

function time(numberText: string): string {
  const result = formatEpochSeconds(numberText);
  assert.ok(result.ok, `expected ${numberText} to be a valid time: ${JSON.stringify(result)}`);
  return result.text;
}

Deno.test("whole seconds carry no fraction", () => {
  assert.equal(time("1625576100"), "2021-07-06T12:55:00+00:00");
});

Deno.test("a fractional t carries exactly six fraction digits", () => {
  assert.equal(time("1625576100.25"), "2021-07-06T12:55:00.250000+00:00");
  assert.equal(time("1625576100.5"), "2021-07-06T12:55:00.500000+00:00");
  assert.equal(time("1625576100.123456"), "2021-07-06T12:55:00.123456+00:00");
});

Deno.test("a fraction rounds half up to the microsecond, from the exact decimal text", () => {
  const table: [string, string][] = [
    ["1625576100.0000005", "2021-07-06T12:55:00.000001+00:00"],
    ["1625576100.00000049999999999999", "2021-07-06T12:55:00.000000+00:00"],
    ["1625576100.1234565", "2021-07-06T12:55:00.123457+00:00"],
    // 0.1234565 is not exact in binary: a float-based rounding would give .123456.
    ["0.1234565", "1970-01-01T00:00:00.123457+00:00"],
    ["1e-7", "1970-01-01T00:00:00.000000+00:00"],
    ["5e-7", "1970-01-01T00:00:00.000001+00:00"],
    ["1e-400", "1970-01-01T00:00:00.000000+00:00"],
  ];
  for (const [input, expected] of table) assert.equal(time(input), expected, input);
});

Deno.test("rounding that reaches a whole second carries into the next second", () => {
  assert.equal(time("1.9999999"), "1970-01-01T00:00:02.000000+00:00");
  assert.equal(time("59.9999996"), "1970-01-01T00:01:00.000000+00:00");
  assert.equal(time("1640995199.99999999"), "2022-01-01T00:00:00.000000+00:00");
});

Deno.test("a value that is mathematically whole carries no fraction, however it is written", () => {
  const table: [string, string][] = [
    ["1625576100.0", "2021-07-06T12:55:00+00:00"],
    ["1625576100.000000000", "2021-07-06T12:55:00+00:00"],
    ["1.6255761e9", "2021-07-06T12:55:00+00:00"],
    ["1.6255761E+9", "2021-07-06T12:55:00+00:00"],
    ["16255761000e-1", "2021-07-06T12:55:00+00:00"],
    ["0", "1970-01-01T00:00:00+00:00"],
    ["-0", "1970-01-01T00:00:00+00:00"],
    ["-0.0e5", "1970-01-01T00:00:00+00:00"],
    ["0e99999999999999999999", "1970-01-01T00:00:00+00:00"],
  ];
  for (const [input, expected] of table) assert.equal(time(input), expected, input);
});

Deno.test("t is valid from 0 up to, not including, 253402300800", () => {
  assert.equal(time("253402300799"), "9999-12-31T23:59:59+00:00");
  assert.equal(time("253402300799.999999"), "9999-12-31T23:59:59.999999+00:00");
  for (
    const input of [
      "253402300800",
      "253402300800.5",
      "2.534023008e11",
      "1e12",
      "1e400",
      "1e99999999999999999999",
      "-1",
      "-0.000001",
      "-1e-400",
      "1" + "0".repeat(100_000),
    ]
  ) {
    const result = formatEpochSeconds(input);
    assert.equal(result.ok, false, input.slice(0, 40));
  }
});

Deno.test("a t that rounds up to the year 10000 is refused, naming why", () => {
  const result = formatEpochSeconds("253402300799.9999995");
  assert.deepEqual(result, {
    ok: false,
    problem: "253402300799.9999995 rounds to the year 10000, which RFC 3339 cannot write",
  });
});

Deno.test("an out-of-range t is refused with the range in the problem", () => {
  assert.deepEqual(formatEpochSeconds("-5"), {
    ok: false,
    problem: "-5 is outside 0 to 253402300799 (1970 to 9999)",
  });
});

Deno.test("a million-digit t is handled in linear time", () => {
  const digits = "1" + "0".repeat(999_999);
  assert.equal(formatEpochSeconds(digits).ok, false);
  assert.equal(time("0." + "9".repeat(999_999)), "1970-01-01T00:00:01.000000+00:00");
  assert.equal(time("1625576100." + "0".repeat(999_999)), "2021-07-06T12:55:00+00:00");
});

Deno.test("whole seconds agree with Date for dates across 1970-9999", () => {
  // A deterministic spread, including leap days and century years.
  for (let seconds = 0; seconds < 253402300800; seconds += 86_399_987 * 7) {
    const expected = new Date(seconds * 1000).toISOString().slice(0, 19) + "+00:00";
    assert.equal(time(String(seconds)), expected);
  }
  assert.equal(time("951782400"), "2000-02-29T00:00:00+00:00");
  assert.equal(time("4107542400"), "2100-03-01T00:00:00+00:00");
});

Deno.test("formatTimestamp writes RFC 3339 UTC with milliseconds and +00:00", () => {
  assert.equal(formatTimestamp(1625576100123), "2021-07-06T12:55:00.123+00:00");
  assert.equal(formatTimestamp(0), "1970-01-01T00:00:00.000+00:00");
  assert.equal(formatTimestamp(-1), "1969-12-31T23:59:59.999+00:00");
  assert.equal(formatTimestamp(-62167219200000), "0000-01-01T00:00:00.000+00:00");
  assert.equal(formatTimestamp(253402300799999), "9999-12-31T23:59:59.999+00:00");
  assert.equal(formatTimestamp(1625576100123.9), "2021-07-06T12:55:00.123+00:00");
});

Deno.test("formatTimestamp agrees with Date across its range", () => {
  for (let ms = -62167219200000; ms < 253402300800000; ms += 9_876_543_210_987) {
    assert.equal(formatTimestamp(ms), new Date(ms).toISOString().slice(0, -1) + "+00:00");
  }
});

Deno.test("formatTimestamp throws a RangeError for a value that is not a time", () => {
  for (const ms of [NaN, Infinity, -Infinity, 253402300800000, -62167219200001]) {
    assert.throws(() => formatTimestamp(ms), RangeError);
  }
});
