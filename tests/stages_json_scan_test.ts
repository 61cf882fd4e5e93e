import assert from "node:assert/strict";
import { type JsonNode, jsonText, scanJson, stringValue } from "../src/stages/json_scan.ts";

function scan(text: string, materializeDepth = 0, maxDepth = 32): JsonNode {
  const scanned = scanJson(text, { maxDepth, materializeDepth });
  assert.ok(scanned.ok, `expected valid JSON: ${JSON.stringify(scanned)}`);
  return scanned.root;
}

function failure(text: string, maxDepth = 32) {
  const scanned = scanJson(text, { maxDepth, materializeDepth: 3 });
  assert.ok(!scanned.ok, `expected ${JSON.stringify(text.slice(0, 60))} to be refused`);
  return scanned;
}

/** A tiny seeded generator, so a failure can be replayed. */
function randomSource(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

Deno.test("every RFC 8259 value kind scans, with its source range", () => {
  const text = ' {"s": "x", "n": -1.5e3, "t": true, "f": false, "z": null, "a": [], "o": {}} ';
  const root = scan(text, 1);
  assert.equal(root.kind, "object");
  assert.deepEqual([root.start, root.end], [1, text.length - 1]);
  const kinds = root.members!.map((member) => [member.key, member.value.kind]);
  assert.deepEqual(kinds, [
    ["s", "string"],
    ["n", "number"],
    ["t", "true"],
    ["f", "false"],
    ["z", "null"],
    ["a", "array"],
    ["o", "object"],
  ]);
  const n = root.members![1].value;
  assert.equal(text.slice(n.start, n.end), "-1.5e3");
});

Deno.test("members keep source order, integer-like keys and duplicates included", () => {
  const root = scan('{"10":1,"2":2,"a":3,"2":4}', 1);
  assert.deepEqual(root.members!.map((member) => member.key), ["10", "2", "a", "2"]);
});

Deno.test("keys are decoded; their source range keeps the text as written", () => {
  const text = '{"a\\u0062\\n": 1}';
  const member = scan(text, 1).members![0];
  assert.equal(member.key, "ab\n");
  assert.equal(text.slice(member.keyStart, member.keyEnd), '"a\\u0062\\n"');
});

Deno.test("containers below materializeDepth are ranges only", () => {
  const root = scan('{"a":{"b":[1]}}', 1);
  const inner = root.members![0].value;
  assert.equal(inner.kind, "object");
  assert.equal(inner.members, null);
  assert.equal(jsonText('{"a":{"b":[1]}}', inner), '{"b":[1]}');
});

Deno.test("jsonText removes whitespace outside strings and keeps it inside", () => {
  const text = '{ "a b" : [ 1 ,\n\t2 ] ,\r\n "c" : " x  y " }';
  assert.equal(jsonText(text, scan(text)), '{"a b":[1,2],"c":" x  y "}');
});

Deno.test("jsonText of an already compact range is the source slice", () => {
  const text = '{"a":[1.50,"x\\"y"]}';
  const root = scan(text);
  assert.equal(root.compact, true);
  assert.equal(jsonText(text, root), text);
});

Deno.test("bare NaN, Infinity and -Infinity read as null outside strings", () => {
  const text = '[NaN, Infinity, -Infinity, "NaN", "-Infinity", {"Infinity": NaN}]';
  const root = scan(text, 1);
  assert.deepEqual(root.items!.map((item) => item.kind), [
    "null",
    "null",
    "null",
    "string",
    "string",
    "object",
  ]);
  assert.equal(
    jsonText(text, root),
    '[null,null,null,"NaN","-Infinity",{"Infinity":null}]',
  );
});

Deno.test("a NaN token makes its containers non-compact even without whitespace", () => {
  const text = '{"a":[NaN]}';
  const root = scan(text, 1);
  assert.equal(root.compact, false);
  assert.equal(jsonText(text, root), '{"a":[null]}');
});

Deno.test("numbers keep every digit as written", () => {
  for (
    const number of [
      "18446744073709551615",
      "229.70000000000002",
      "1.50",
      "1e3",
      "-0",
      "1E+2",
      "0.1e-5",
      "1" + "0".repeat(100_000),
    ]
  ) {
    const text = `[${number}]`;
    assert.equal(jsonText(text, scan(text)), text);
  }
});

Deno.test("stringValue decodes escapes, including surrogate pairs and lone surrogates", () => {
  const text = '["plain", "\\ud83d\\ude00\\u00e9\\/\\b\\f\\n\\r\\t\\"\\\\", "\\udc00"]';
  const items = scan(text, 1).items!;
  assert.deepEqual(items.map((item) => stringValue(text, item)), [
    "plain",
    '😀é/\b\f\n\r\t"\\',
    "\udc00",
  ]);
});

Deno.test("text that is not strict JSON is refused as invalid_json", () => {
  const invalid = [
    "",
    " ",
    "{",
    "}",
    "{]",
    "[}",
    '{"a":1,}',
    "[1,]",
    "[,1]",
    '{"a" 1}',
    '{"a":}',
    "{a:1}",
    "{'a':1}",
    '{"a":1}}',
    '{"a":1} x',
    '{"a":1}{}',
    "01",
    "-01",
    "1.",
    ".5",
    "+1",
    "1e",
    "1e+",
    "-",
    "0x10",
    "tru",
    "nul",
    "True",
    "nan",
    "NAN",
    "-NaN",
    "+Infinity",
    "infinity",
    '"abc',
    '"\\x"',
    '"\\u12"',
    '"\\u12g4"',
    '"a\nb"',
    '"a\tb"',
    '"\u0000"',
    "/* c */ {}",
    "{} // c",
    "\u00a0{}",
    "\ufeff{}",
    "[1 2]",
    '{"a":1 "b":2}',
  ];
  for (const text of invalid) {
    assert.equal(failure(text).reason, "invalid_json", JSON.stringify(text));
  }
});

Deno.test("a syntax error names the offending character, its offset and what was expected", () => {
  assert.deepEqual(failure('{"t":1625576100,}'), {
    ok: false,
    reason: "invalid_json",
    problem: 'unexpected "}"',
    index: 16,
    expected: "a key",
  });
  assert.deepEqual(failure('{"a":1 "b":2}'), {
    ok: false,
    reason: "invalid_json",
    problem: 'unexpected "\\""',
    index: 7,
    expected: '"," or "}"',
  });
  assert.deepEqual(failure('{"a":1'), {
    ok: false,
    reason: "invalid_json",
    problem: "unexpected end of payload",
    index: 6,
  });
  assert.deepEqual(failure('["a\nb"]'), {
    ok: false,
    reason: "invalid_json",
    problem: "unescaped control character U+000A in a string",
    index: 3,
  });
});

Deno.test("nesting deeper than maxDepth is refused as too_deep where it happens", () => {
  assert.deepEqual(failure("[[[1]]]", 2), {
    ok: false,
    reason: "too_deep",
    problem: "nesting deeper than 2 levels",
    index: 2,
  });
  assert.ok(scanJson("[[1]]", { maxDepth: 2, materializeDepth: 0 }).ok);
});

Deno.test("100 000 nested brackets are refused without recursion", () => {
  assert.equal(failure("[".repeat(100_000)).reason, "too_deep");
});

Deno.test("100 000 nested brackets are scanned without recursion when allowed", () => {
  const text = '{"a":' + "[".repeat(100_000) + "]".repeat(100_000) + "}";
  const root = scan(text, 1, 200_000);
  assert.equal(jsonText(text, root), text);
});

Deno.test("scanning agrees with JSON.parse on valid and mutated JSON", () => {
  const random = randomSource(42);
  const seeds = [
    '{"t":1625576100,"r":[{"_vid":"a","P":1.5e3,"s":"x\\u00e9\\n","b":[true,false,null]}],"m":{}}',
    '[1, -0.5, 2E-3, "\\"", {"": {}}, [[]]]',
    '{"a" : "b" , "c" : [ 1 , 2 ] }',
  ];
  const alphabet = '{}[]:,"\\ 0123456789-+.eEtrufalsn\tu\n';
  for (let n = 0; n < 20_000; n++) {
    const seed = seeds[n % seeds.length];
    let text = seed;
    for (let edits = 1 + Math.floor(random() * 3); edits > 0; edits--) {
      const at = Math.floor(random() * (text.length + 1));
      const char = alphabet[Math.floor(random() * alphabet.length)];
      const kind = random();
      text = kind < 0.4
        ? text.slice(0, at) + char + text.slice(at)
        : kind < 0.7
        ? text.slice(0, at) + text.slice(at + 1)
        : text.slice(0, at) + char + text.slice(at + 1);
    }
    let parsed: unknown;
    let valid = true;
    try {
      parsed = JSON.parse(text);
    } catch {
      valid = false;
    }
    const scanned = scanJson(text, { maxDepth: 1000, materializeDepth: 2 });
    assert.equal(scanned.ok, valid, JSON.stringify(text));
    if (scanned.ok) {
      assert.deepEqual(JSON.parse(jsonText(text, scanned.root)), parsed, JSON.stringify(text));
    }
  }
});

Deno.test("random text never throws", () => {
  const random = randomSource(9);
  for (let n = 0; n < 5000; n++) {
    let text = "";
    for (let length = Math.floor(random() * 40); length > 0; length--) {
      text += String.fromCharCode(Math.floor(random() * 128));
    }
    const scanned = scanJson(text, { maxDepth: 8, materializeDepth: 3 });
    if (!scanned.ok) assert.ok(scanned.index >= 0 && scanned.index <= text.length);
  }
});
