// The cross-cutting concerns every handler shares, composed with middy so that a handler is only
// "parse the event, call the domain, shape the reply": structured JSON logs with the Lambda context
// (Powertools Logger), CloudWatch metrics in Embedded Metric Format (Powertools Metrics), flushed
// after each invocation, and one log line for an invocation that failed.
import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import middy, { type MiddlewareObj } from '@middy/core';
import type { Context } from 'aws-lambda';
import type { Logger as DomainLogger } from '../shared/log.js';

export { MetricUnit };

const SERVICE = 'openai-batch';

let loggerInstance: Logger | undefined;
let metricsInstance: Metrics | undefined;

/** Created on first use, so the environment (POWERTOOLS_LOG_LEVEL, ...) is read at the first invocation. */
export function logger(): Logger {
  loggerInstance ??= new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE });
  return loggerInstance;
}

export function metrics(): Metrics {
  metricsInstance ??= new Metrics({
    namespace: process.env.POWERTOOLS_METRICS_NAMESPACE ?? 'BatchService',
    serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? SERVICE,
  });
  return metricsInstance;
}

/** The domain's Logger port, written through Powertools (so every line carries the Lambda context). */
export function domainLogger(log: Logger = logger()): DomainLogger {
  return {
    log(level, message, fields) {
      log[level](message, fields ?? {});
    },
  };
}

function observe<TEvent, TResult>(functionName: string): MiddlewareObj<TEvent, TResult> {
  const flush = () => {
    if (metrics().hasStoredMetrics()) metrics().publishStoredMetrics();
  };
  return {
    name: 'observe',
    before: (request) => {
      logger().addContext(request.context);
      logger().appendKeys({ function: functionName });
    },
    after: flush,
    onError: (request) => {
      logger().error('invocation failed', request.error ?? 'unknown error');
      metrics().addMetric('InvocationErrors', MetricUnit.Count, 1);
      flush();
      // middy rethrows request.error: the platform retries (SQS redelivers, Step Functions' Retry).
    },
  };
}

/** A Lambda handler with logging and metrics around it. */
export function lambdaHandler<TEvent, TResult>(functionName: string, handler: (event: TEvent, context: Context) => Promise<TResult>) {
  return middy<TEvent, TResult>((event: TEvent, context: Context) => handler(event, context)).use(observe<TEvent, TResult>(functionName));
}

/**
 * A Lambda handler whose answer a middleware shapes: the handler returns `THandlerResult`, the
 * function answers `TResult` (e.g. middy's SQS partial batch failure turns settled outcomes into
 * batchItemFailures). Logging and metrics as lambdaHandler.
 */
export function shapedLambdaHandler<TEvent, TResult, THandlerResult>(
  functionName: string,
  handler: (event: TEvent, context: Context) => Promise<THandlerResult>,
  shape: MiddlewareObj<TEvent, TResult>,
) {
  const untyped = handler as unknown as (event: TEvent, context: Context) => Promise<TResult>;
  return middy<TEvent, TResult>(untyped).use(shape).use(observe<TEvent, TResult>(functionName));
}
