// The plain client of the faults scenarios, run as a process of its own (like the service), so
// neither shares a core with the upstream simulator: `node --import tsx bench/scenarios/plain-client.ts
// URL REQUESTS CONCURRENCY`. Exactly CONCURRENCY requests on the wire through fetch; a 429 is
// retried after its retry-after-ms with its slot given to the next request meanwhile, up to 10
// attempts. Warms up on 5 × CONCURRENCY requests first; prints one JSON line.

/** The body of request i: bench/run.ts's chatBody (not imported, to keep this process light). */
const chatBody = (i: number) => ({ model: 'sim-model', messages: [{ role: 'user', content: `question ${i}` }] });

interface PlainResult {
  wallMs: number;
  ok: number;
  failed: number;
  attempts: number;
}

async function run(url: string, requests: number, concurrency: number, offset: number): Promise<PlainResult> {
  const headers = { 'content-type': 'application/json', authorization: 'Bearer bench' };
  let next = 0;
  let ok = 0;
  let failed = 0;
  let attempts = 0;
  let waiting = 0;
  const ready: { i: number; tries: number }[] = [];
  const sleepers: (() => void)[] = [];
  const wake = () => sleepers.splice(0).forEach((resolve) => resolve());

  const take = async (): Promise<{ i: number; tries: number } | undefined> => {
    for (;;) {
      const retry = ready.shift();
      if (retry) return retry;
      if (next < requests) return { i: next++, tries: 0 };
      if (waiting === 0) return undefined;
      await new Promise<void>((resolve) => sleepers.push(resolve));
    }
  };
  const worker = async () => {
    for (let job = await take(); job; job = await take()) {
      attempts++;
      let status = 0;
      let retryAfterMs = 100;
      try {
        const response = await fetch(url, { method: 'POST', headers, body: JSON.stringify(chatBody(offset + job.i)) });
        await response.arrayBuffer();
        status = response.status;
        retryAfterMs = Number(response.headers.get('retry-after-ms') ?? 1_000);
      } catch {
        status = 0;
      }
      if (status === 200) ok++;
      else if ((status === 429 || status === 0) && job.tries + 1 < 10) {
        waiting++;
        const again = { i: job.i, tries: job.tries + 1 };
        setTimeout(() => {
          waiting--;
          ready.push(again);
          wake();
        }, retryAfterMs);
      } else failed++;
    }
    wake();
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, worker));
  return { wallMs: performance.now() - started, ok, failed, attempts };
}

const [url, requestsText, concurrencyText] = process.argv.slice(2);
if (!url || !requestsText || !concurrencyText) {
  console.error('usage: plain-client.ts URL REQUESTS CONCURRENCY');
  process.exit(2);
}
const requests = Number(requestsText);
const concurrency = Number(concurrencyText);
await run(url, 5 * concurrency, concurrency, 10_000_000);
process.stdout.write(`${JSON.stringify(await run(url, requests, concurrency, 0))}\n`);
