// `npm start`: the Batch API on one machine, with no AWS account.
import { ConfigError, loadConfig } from '../shared/config.js';
import { jsonLogger } from '../shared/log.js';
import { startService } from './service.js';

const log = jsonLogger(process.env.LOG_LEVEL === 'debug' ? 'debug' : 'info');

try {
  const config = loadConfig(process.env);
  const service = await startService(config, log);
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
  throw error;
}
