// The fast path must never accept a line the slow path (TextDecoder + JSON.parse + the checks)
// would refuse, and must find the same custom_id and model: checked here on generated lines and
// on many random mutations of them.
import { describe, expect, it } from 'vitest';
import { type FastLine, fastLineExpectations, scanRequestLine } from '../../../shared/input/fast-line.js';
import { inspectRequestLine, MAX_JSON_DEPTH } from '../../../shared/input/request-line.js';

const ENDPOINT = '/v1/chat/completions';
const EXPECT = fastLineExpectations(ENDPOINT);

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function scan(bytes: Buffer, offset = 0): FastLine | undefined {
  // Place the line at an odd offset in a bigger buffer: the word-at-a-time scan must cope.
  const host = Buffer.alloc(bytes.length + offset + 7, 0x20);
  bytes.copy(host, offset);
  const out: FastLine = { idFrom: 0, idTo: 0, modelFrom: 0, modelTo: 0 };
  if (!scanRequestLine(host, offset, offset + bytes.length, EXPECT, out)) return undefined;
  return { idFrom: out.idFrom - offset, idTo: out.idTo - offset, modelFrom: out.modelFrom - offset, modelTo: out.modelTo - offset };
}

/** The fast path's answer must agree with the slow path's whenever it says yes. */
function check(bytes: Buffer, offset = 0): 'fast' | 'slow' {
  const fast = scan(bytes, offset);
  if (!fast) return 'slow';
  const slow = inspectRequestLine(1, bytes, ENDPOINT);
  if (slow.error || slow.model === undefined) {
    throw new Error(`fast path accepted a line the slow path refuses (${slow.error?.code}): ${JSON.stringify(bytes.toString('latin1'))}`);
  }
  expect(bytes.toString('utf8', fast.idFrom, fast.idTo), bytes.toString('latin1')).toBe(slow.customId);
  expect(bytes.toString('utf8', fast.modelFrom, fast.modelTo), bytes.toString('latin1')).toBe(slow.model);
  return 'fast';
}

const WORDS = [
  'hello',
  'wörld',
  '日本語',
  'emoji 🎉',
  'tab\there',
  'quote "q"',
  'back\\slash',
  'line\nbreak',
  '',
  'x'.repeat(40),
  'ünïcödé ✓'.repeat(5),
];

function randomValue(next: () => number, depth: number): unknown {
  const r = next();
  if (depth > 3 || r < 0.3) return WORDS[Math.floor(next() * WORDS.length)];
  if (r < 0.45) return [0, 1, -1, 0.5, 1e-7, 123456789012345, 1.5e300, 2 ** 60, -0, 3.25][Math.floor(next() * 10)];
  if (r < 0.55) return [true, false, null][Math.floor(next() * 3)];
  if (r < 0.75) return Array.from({ length: Math.floor(next() * 4) }, () => randomValue(next, depth + 1));
  return Object.fromEntries(
    Array.from({ length: Math.floor(next() * 4) }, (_, i) => [`k${i}${WORDS[Math.floor(next() * 3)]}`, randomValue(next, depth + 1)]),
  );
}

function randomRequest(next: () => number, i: number): string {
  const body: Record<string, unknown> = {
    model: next() < 0.9 ? 'gpt-4o-mini' : WORDS[Math.floor(next() * WORDS.length)],
    messages: [{ role: 'user', content: randomValue(next, 2) }],
  };
  if (next() < 0.2) body.stream = [true, false, 'true', null][Math.floor(next() * 4)];
  if (next() < 0.3) body.extra = randomValue(next, 1);
  const request: Record<string, unknown> = {
    custom_id: next() < 0.9 ? `req-${i}-${WORDS[Math.floor(next() * WORDS.length)]}` : [1, null, '', ['a']][Math.floor(next() * 4)],
    method: next() < 0.9 ? 'POST' : ['GET', 'post', 1][Math.floor(next() * 3)],
    url: next() < 0.85 ? ENDPOINT : ['/v4/chat/completions', '/v1/embeddings', '/v1/chat/completions/', 5][Math.floor(next() * 4)],
    body: next() < 0.95 ? body : 'nope',
  };
  const keys = Object.keys(request).sort(() => next() - 0.5);
  let text = JSON.stringify(Object.fromEntries(keys.map((k) => [k, request[k]])), null, next() < 0.2 ? 1 : undefined).replace(
    /\n/g,
    next() < 0.5 ? ' ' : '\r',
  );
  // Sometimes duplicate keys (the last one wins in JSON.parse) or escaped keys.
  if (next() < 0.1) text = text.replace('{', '{"custom_id":"shadowed",');
  if (next() < 0.05) text = text.replace('"custom_id"', '"custom\\u005fid"');
  if (next() < 0.05) text = text.replace('"model"', '"mod\\u0065l"');
  if (next() < 0.05) text = text.replace(/}$/, ',"body":{"model":"late"}}');
  return text;
}

function mutate(bytes: Buffer, next: () => number): Buffer {
  const out = Buffer.from(bytes);
  const at = Math.floor(next() * out.length);
  const pick = next();
  const special = [0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x00, 0x09, 0x0d, 0x80, 0xc3, 0xff, 0xed, 0x65, 0x2e, 0x2d, 0x30, 0x31];
  if (pick < 0.4) {
    out[at] = next() < 0.5 ? special[Math.floor(next() * special.length)]! : Math.floor(next() * 256);
    return out;
  }
  if (pick < 0.7) return Buffer.concat([out.subarray(0, at), out.subarray(at + 1)]);
  if (pick < 0.85)
    return Buffer.concat([out.subarray(0, at), Buffer.from([special[Math.floor(next() * special.length)]!]), out.subarray(at)]);
  return out.subarray(0, at);
}

describe('scanRequestLine (the validator fast path)', () => {
  it('agrees with JSON.parse and the slow checks on generated lines and their mutations', () => {
    const next = rng(42);
    let fast = 0;
    let total = 0;
    for (let i = 0; i < 4000; i++) {
      const line = Buffer.from(randomRequest(next, i));
      if (check(line, i % 8) === 'fast') fast++;
      total++;
      let mutated: Buffer = line;
      for (let m = 0; m < 6; m++) {
        mutated = mutate(mutated, next);
        check(mutated, (i + m) % 8);
        total++;
      }
    }
    // The generator makes mostly valid requests: most of them must take the fast path.
    expect(fast).toBeGreaterThan(1000);
    expect(total).toBe(28_000);
  });

  it('accepts plain requests and finds custom_id and model', () => {
    const line = Buffer.from(
      JSON.stringify({
        custom_id: 'a-1',
        method: 'POST',
        url: ENDPOINT,
        body: { model: 'm', messages: [{ role: 'user', content: 'hi ✓' }], n: 1.5, t: -0 },
      }),
    );
    const found = scan(line, 3)!;
    expect(line.toString('utf8', found.idFrom, found.idTo)).toBe('a-1');
    expect(line.toString('utf8', found.modelFrom, found.modelTo)).toBe('m');
    expect(scan(Buffer.from(`  ${line.toString()} \t`))).toBeDefined();
    expect(scan(Buffer.from(line.toString().replace(ENDPOINT, '/v4/chat/completions')))).toBeDefined();
  });

  it('leaves every doubtful line to the slow path', () => {
    const base = { custom_id: 'a', method: 'POST', url: ENDPOINT, body: { model: 'm' } };
    const doubtful = [
      JSON.stringify({ ...base, body: { model: 'm', x: 1e21 } }),
      JSON.stringify({ ...base, body: { model: 'm', x: 12345678901234567 } }),
      JSON.stringify({ ...base, custom_id: 'tab\there' }),
      JSON.stringify({ ...base, body: { model: 'm', stream: true } }),
      JSON.stringify(base).replace('"custom_id"', '"custom\\u005fid"'),
      JSON.stringify(base).replace('}}', '},"custom_id":1}'),
      `\uFEFF${JSON.stringify(base)}`,
      `${JSON.stringify(base)}x`,
      JSON.stringify(base).replace('"a"', '"\xff"'),
      `{"custom_id":"a","method":"POST","url":"${ENDPOINT}","body":{"model":"m","x":${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}}}`,
    ];
    for (const text of doubtful) expect(scan(Buffer.from(text, text.includes('\xff') ? 'latin1' : 'utf8')), text).toBeUndefined();
    const deepest = `{"custom_id":"a","method":"POST","url":"${ENDPOINT}","body":{"model":"m","x":${'['.repeat(MAX_JSON_DEPTH - 2)}${']'.repeat(MAX_JSON_DEPTH - 2)}}}`;
    expect(scan(Buffer.from(deepest))).toBeDefined();
  });

  it('scans long strings a word at a time at any alignment', () => {
    for (const filler of ['a'.repeat(1000), 'é'.repeat(300), `${'a'.repeat(37)}\\"${'b'.repeat(50)}`, `${'a'.repeat(64)}\t`]) {
      const text = `{"custom_id":"x","method":"POST","url":"${ENDPOINT}","body":{"model":"m","c":"${filler}"}}`;
      for (let offset = 0; offset < 8; offset++) check(Buffer.from(text), offset);
    }
    expect(
      scan(Buffer.from(`{"custom_id":"x","method":"POST","url":"${ENDPOINT}","body":{"model":"m","c":"${'a'.repeat(64)}\t"}}`), 1),
    ).toBeUndefined();
  });
});

describe('the word-at-a-time string scan', () => {
  it('agrees with JSON.parse for every byte value at every position of a long string', () => {
    const head = Buffer.from(`{"custom_id":"x","method":"POST","url":"${ENDPOINT}","body":{"model":"m","c":"`);
    const tail = Buffer.from('"}}');
    let fast = 0;
    for (let byte = 0; byte < 256; byte++) {
      for (let position = 0; position < 24; position++) {
        const content = Buffer.alloc(48, 0x61);
        content[position] = byte;
        const line = Buffer.concat([head, content, tail]);
        if (check(line, position % 4) === 'fast') fast++;
      }
    }
    // Every printable ASCII byte but '"' and '\\' stays on the fast path.
    expect(fast).toBe((0x80 - 0x20 - 2) * 24);
  });
});
