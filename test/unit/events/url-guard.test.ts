// Where webhooks may go: public unicast addresses only (after DNS), unless private URLs are
// allowed; and the sender checks the address it connects to, not only the one checked at create.
import { describe, expect, it } from 'vitest';
import { addressAllowed, webhookUrlProblem } from '../../../shared/events/url-guard.js';
import { httpWebhookSender } from '../../../shared/events/webhook-sender.js';
import { startWebhookReceiver } from '../../support/webhook-receiver.js';

const strict = { allowPrivate: false };

describe('addressAllowed', () => {
  it('allows public unicast addresses only', () => {
    for (const address of ['93.184.215.14', '8.8.8.8', '2606:4700::1111']) expect(addressAllowed(address, strict), address).toBe(true);
    for (const address of [
      '127.0.0.1',
      '10.0.0.1',
      '172.16.5.4',
      '192.168.0.1',
      '100.64.0.1',
      '169.254.169.254',
      '0.0.0.0',
      '255.255.255.255',
      '224.0.0.1',
      '::1',
      '::',
      'fe80::1',
      'fd00:ec2::254',
      '::ffff:169.254.169.254',
      'not-an-address',
    ]) {
      expect(addressAllowed(address, strict), address).toBe(false);
    }
    expect(addressAllowed('127.0.0.1', { allowPrivate: true })).toBe(true);
  });
});

describe('webhookUrlProblem', () => {
  it('resolves the host: a name for a loopback address is refused like the address', async () => {
    expect(await webhookUrlProblem('https://localhost/hook', strict)).toMatch(/non-public/);
    expect(await webhookUrlProblem('https://93.184.215.14/hook', strict)).toBeUndefined();
    expect(await webhookUrlProblem('http://93.184.215.14/hook', strict)).toMatch(/https/);
    expect(await webhookUrlProblem('https://no-such-host.invalid/hook', strict)).toMatch(/cannot be resolved/);
    expect(await webhookUrlProblem('http://localhost/hook', { allowPrivate: true })).toBeUndefined();
    expect(await webhookUrlProblem('file:///etc/passwd', { allowPrivate: true })).toMatch(/http/);
  });
});

describe('httpWebhookSender', () => {
  it('refuses to connect to a non-public address, whatever the URL passed before', async () => {
    const receiver = await startWebhookReceiver();
    try {
      const port = new URL(receiver.url).port;
      const sender = httpWebhookSender({ timeoutMs: 2_000, policy: strict });
      const answer = await sender.send(`http://localhost:${port}/hooks`, ['whsec_dGVzdA=='], { id: 'evt_1', payload: '{}' }, Date.now());
      expect(answer).toEqual({ ok: false, error: 'the receiver address is not public' });
      expect(receiver.received).toEqual([]);

      const open = httpWebhookSender({ timeoutMs: 2_000, policy: { allowPrivate: true } });
      expect(await open.send(receiver.url, ['whsec_dGVzdA=='], { id: 'evt_1', payload: '{}' }, Date.now())).toEqual({
        ok: true,
        status: 200,
      });
    } finally {
      await receiver.close();
    }
  });

  it('does not follow a redirect: a 3xx is a failed attempt', async () => {
    const { createServer } = await import('node:http');
    const server = createServer((_req, res) => {
      res.writeHead(307, { location: 'http://169.254.169.254/latest/meta-data/' });
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const sender = httpWebhookSender({ timeoutMs: 2_000, policy: { allowPrivate: true } });
      expect(await sender.send(`http://127.0.0.1:${port}/`, ['whsec_dGVzdA=='], { id: 'evt_1', payload: '{}' }, Date.now())).toEqual({
        ok: false,
        status: 307,
        error: 'HTTP 307',
      });
    } finally {
      server.close();
    }
  });
});
