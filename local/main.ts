// `npm start`: the Batch API on one machine, with no AWS account.

import v8 from 'node:v8';
import { ConfigError, loadConfig } from '../shared/config.js';
import { errorMessage, jsonLogger } from '../shared/log.js';
import { guardProcess } from './guards.js';
import { startService } from './service.js';

// Keep the heap near what is live. By default V8 lets garbage grow the heap to about four times
// the live size between full collections, which a long batch turns into ~60 MB more peak RSS for
// nothing (the work holds ~30 MB). 20% costs little CPU; a --heap-growing-percent given to node wins.
if (!process.execArgv.some((arg) => arg.startsWith('--heap-growing-percent'))) v8.setFlagsFromString('--heap-growing-percent=20');

// The embedded DynamoDB client talks to a local server; the SDK's notice about Node 20 is not for this user.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const log = jsonLogger(process.env.LOG_LEVEL === 'debug' ? 'debug' : 'info');
// Before anything else runs: no error of one request may stop the service for every tenant.
const guard = guardProcess(log);

try {
  const config = loadConfig(process.env);
  const service = await startService(config, log, { healthDetails: () => ({ escaped_errors: guard.escapedErrors() }) });
  log.log('info', 'batch service listening', {
    url: `${service.url}/v1`,
    dataDir: config.dataDir,
    upstream: config.upstream.baseUrl ? 'configured' : 'none (batch-test-model only)',
    auth: config.apiKeys ? `${config.apiKeys.size} API keys` : 'open: API_KEYS is unset, every request belongs to the project "default"',
  });
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.log('info', 'stopping', { signal });
    await service.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
} catch (error) {
  if (error instanceof ConfigError) {
    log.log('error', error.message);
    process.exit(2);
  }
  // A service that could not start (the port is taken, the data directory unreadable) exits: the
  // guard keeps a running service alive, never a half-started one.
  log.log('error', 'the service could not start', { error: errorMessage(error) });
  process.exit(1);
}
