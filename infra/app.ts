// `npx cdk synth` / `npx cdk deploy`: the Batch API stack, configured from CDK context (see
// infra/config.ts propsFromContext), checked by cdk-nag's AwsSolutions rules on every synth.
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { ConfigError } from '../shared/config.js';
import { BatchServiceStack } from './batch-service-stack.js';
import { propsFromContext } from './config.js';

const app = new App();
try {
  const stackName = app.node.tryGetContext('stackName');
  new BatchServiceStack(app, typeof stackName === 'string' && stackName ? stackName : 'BatchService', {
    service: propsFromContext((key) => app.node.tryGetContext(key)),
  });
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(error.message);
    process.exit(2);
  }
  throw error;
}
// cdk-nag v3 is a policy validation plugin (v2's Aspects and NagSuppressions are gone): findings
// fail the synth unless acknowledged, each with its reason, next to the resource concerned.
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
app.synth();
