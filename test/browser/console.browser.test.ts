// The console in headless Chromium (Debian's chromium, driven by playwright-core): sign in with a
// key, watch a running batch's progress bar move, cancel it, download its error file, retry it; a
// wrong key is told in words; another project's batches never appear. Screenshots of the list and
// of a batch's page go to docs/.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chatLine, chatLines, client, submit, waitForBatch } from '../support/e2e.js';
import { REPO_ROOT, type ServiceProcess, startServiceProcess } from '../support/service-process.js';
import { startUpstreamSim, type UpstreamSim } from '../support/upstream-sim.js';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

if (!existsSync(CHROMIUM)) {
  const line = `${CHROMIUM} is absent (apt-get install -y chromium): the console's browser tests skipped`;
  console.warn(line);
  it.skip(line, () => undefined);
} else {
  describe('the console', () => {
    let upstream: UpstreamSim;
    let service: ServiceProcess;
    let context: BrowserContext;
    let profile: string;
    let page: Page;

    beforeAll(async () => {
      upstream = await startUpstreamSim({ latencyMs: 5 });
      service = await startServiceProcess({
        env: {
          API_KEYS: 'alice-key:alpha,bob-key:beta',
          UPSTREAM_BASE_URL: upstream.baseURL,
          UPSTREAM_CONCURRENCY: '1',
          UPSTREAM_MAX_ATTEMPTS: '1',
          CHUNK_MAX_REQUESTS: '2',
          LOCAL_WORKERS: '1',
        },
      });
      profile = await mkdtemp(path.join(os.tmpdir(), 'batch-console-chromium-'));
      context = await chromium.launchPersistentContext(profile, {
        executablePath: CHROMIUM,
        headless: true,
        args: FLAGS,
        acceptDownloads: true,
        viewport: { width: 1280, height: 800 },
      });
      page = context.pages()[0] ?? (await context.newPage());
    });
    afterAll(async () => {
      await context?.close();
      if (profile) await rm(profile, { recursive: true, force: true });
      await service?.removeDataDir();
      await upstream?.close();
    });

    it('tells a wrong key in words, and keeps nothing of it', async () => {
      await page.goto(`${service.origin}/console`);
      await page.getByLabel('API key').fill('not-a-key');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => page.getByRole('alert').textContent()).toMatch(/This API key was not accepted: Incorrect API key provided\./);
      expect(await page.evaluate(() => sessionStorage.length + localStorage.length)).toBe(0);
    });

    it('lists the project’s batches only, with a moving progress bar; cancels, downloads the errors, retries', async () => {
      const alice = client(service.baseURL, 'alice-key');
      const bob = client(service.baseURL, 'bob-key');
      const bobs = await waitForBatch(bob, (await submit(bob, chatLines(2))).id);
      upstream.configure({
        latencyMs: 5,
        failWhen: (_body, { key }) => (key.includes('FLAKY') ? { status: 503, body: { error: { message: 'overloaded' } } } : undefined),
      });
      const finished = await waitForBatch(alice, (await submit(alice, [...chatLines(3), chatLine('flaky-1', 'FLAKY')])).id);
      upstream.configure({ latencyMs: 400, failWhen: undefined });
      const running = await submit(alice, chatLines(60, { prefix: 'slow' }));

      await page.getByLabel('API key').fill('alice-key');
      await page.getByRole('button', { name: 'Sign in' }).click();
      await expect.poll(() => page.getByRole('table', { name: 'Batches' }).isVisible()).toBe(true);
      expect(await page.evaluate(() => [sessionStorage.getItem('batch-console-api-key'), localStorage.length])).toEqual(['alice-key', 0]);
      expect(page.url()).not.toContain('alice-key');

      const row = page.locator(`tr[data-batch="${running.id}"]`);
      const bar = row.getByRole('progressbar');
      await expect.poll(async () => Number(await bar.getAttribute('aria-valuenow')), { timeout: 20_000 }).toBeGreaterThan(0);
      const before = Number(await bar.getAttribute('aria-valuenow'));
      await expect.poll(async () => Number(await bar.getAttribute('aria-valuenow')), { timeout: 20_000 }).toBeGreaterThan(before);
      await expect.poll(() => page.locator(`tr[data-batch="${finished.id}"]`).isVisible()).toBe(true);
      expect(await page.locator(`tr[data-batch="${bobs.id}"]`).count()).toBe(0);
      expect(await page.content()).not.toContain(bobs.id);
      await page.screenshot({ path: path.join(REPO_ROOT, 'docs/console-list.png') });

      await row.getByRole('button', { name: `Cancel ${running.id}` }).click();
      await expect.poll(() => row.locator('.status').textContent(), { timeout: 30_000 }).toBe('cancelled');
      const [download] = await Promise.all([page.waitForEvent('download'), row.getByRole('button', { name: 'Download errors' }).click()]);
      const errors = (await readFile(await download.path(), 'utf8'))
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line));
      expect(errors.length).toBeGreaterThan(0);
      expect(errors.every((line) => line.error?.code === 'batch_cancelled')).toBe(true);

      upstream.configure({ latencyMs: 5 });
      await row.getByRole('button', { name: `Retry ${running.id}` }).click();
      await expect.poll(() => page.getByText(`Retry of ${running.id}`).isVisible(), { timeout: 10_000 }).toBe(true);
      const retryId = /#\/batches\/(batch_\w+)/.exec(page.url())?.[1];
      expect(retryId).toBeDefined();
      expect(retryId).not.toBe(running.id);
      await expect.poll(() => page.locator('dd.status').textContent(), { timeout: 30_000 }).toBe('completed');
      await expect.poll(() => page.getByRole('table', { name: 'Results' }).locator('tbody tr').count()).toBe(errors.length);
      expect(await page.getByRole('list', { name: 'Timeline' }).textContent()).toMatch(
        /created \(validating\).*in_progress.*finalizing.*completed/,
      );
      await page.screenshot({ path: path.join(REPO_ROOT, 'docs/console-batch.png'), fullPage: true });

      // Another project's batch, asked for by id, is not there.
      await page.goto(`${service.origin}/console/#/batches/${bobs.id}`);
      await expect.poll(() => page.getByText(`No batch ${bobs.id} in your project.`).isVisible()).toBe(true);

      // A batch that ended before its page was opened still draws its progress: from none at its start to all at its end.
      await page.goto(`${service.origin}/console/#/batches/${finished.id}`);
      await expect.poll(() => page.locator('svg.chart polyline').getAttribute('points')).toMatch(/^0,100 .*300,0$/);
    });

    it('serves the page with a strict content security policy, and the API stays behind the key', async () => {
      const response = await fetch(`${service.origin}/console/`);
      expect(response.status).toBe(200);
      expect(response.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(await response.text()).toContain('<label for="api-key">API key</label>');
      const redirect = await fetch(`${service.origin}/console`, { redirect: 'manual' });
      expect(redirect.status).toBe(308);
      expect((await fetch(`${service.origin}/console/assets/nope.js`)).status).toBe(404);
      expect((await fetch(`${service.baseURL}/batches`)).status).toBe(401);
    });
  });
}
