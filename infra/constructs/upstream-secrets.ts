// Upstream routes and their API keys. Keys live in Secrets Manager; the stack hands the functions
// only secret ids (in UPSTREAM_CONFIG), and the workers read each secret once per cold start.
import { CfnOutput, Stack, Validations } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { ENV } from '../../functions/contract.js';
import type { RouteEntry } from '../../shared/upstream/routes.js';
import { routeEntry, type UpstreamRoute, type UpstreamRoutes } from '../config.js';

/**
 * The JSON in UPSTREAM_CONFIG. `routes` is a routes file as shared/upstream/routes.ts parses it
 * (model name or glob pattern → route); `apiKeySecret` is a Secrets Manager SecretId (an ARN, or
 * a name), absent when the upstream takes no key.
 */
export interface UpstreamConfig {
  default: RouteEntry | null;
  routes: Record<string, RouteEntry>;
}

const COMPLETE_ARN = /^arn:[\w-]+:secretsmanager:[\w-]+:\d{12}:secret:.+-[A-Za-z0-9]{6}$/;

export class UpstreamSecrets extends Construct {
  /** Every secret a route names, for the workers' grants. */
  readonly secrets: secretsmanager.ISecret[] = [];
  /** UPSTREAM_CONFIG, and for the default route UPSTREAM_BASE_URL and UPSTREAM_SECRET_ARN. */
  readonly environment: Record<string, string> = {};
  private readonly byName = new Map<string, secretsmanager.ISecret>();

  /** `outputPrefix` prefixes the names of the outputs that print created secrets' ARNs. */
  constructor(
    scope: Construct,
    id: string,
    upstream: UpstreamRoutes,
    private readonly outputPrefix = '',
  ) {
    super(scope, id);
    const config: UpstreamConfig = {
      default: upstream.default ? this.route('Default', upstream.default) : null,
      routes: Object.fromEntries(
        Object.entries(upstream.routes ?? {}).map(([pattern, route]) => [pattern, this.route(`Route-${pattern}`, route)]),
      ),
    };
    this.environment[ENV.upstreamConfig] = Stack.of(this).toJsonString(config);
    if (config.default) {
      this.environment.UPSTREAM_BASE_URL = config.default.baseUrl;
      if (config.default.apiKeySecret) this.environment[ENV.upstreamSecretArn] = config.default.apiKeySecret;
    }
  }

  private route(name: string, route: UpstreamRoute): RouteEntry {
    if (route.apiKeySecret === null) return routeEntry(route, undefined);
    const secret = route.apiKeySecret === undefined ? this.created(name, route.baseUrl) : this.referenced(route.apiKeySecret);
    return routeEntry(route, secret.secretFullArn ?? secret.secretName);
  }

  /** A secret the team already has, by name or ARN. The same secret named twice is one grant. */
  private referenced(nameOrArn: string): secretsmanager.ISecret {
    const known = this.byName.get(nameOrArn);
    if (known) return known;
    const id = `Secret${this.byName.size + 1}`;
    const secret = nameOrArn.startsWith('arn:')
      ? COMPLETE_ARN.test(nameOrArn)
        ? secretsmanager.Secret.fromSecretCompleteArn(this, id, nameOrArn)
        : secretsmanager.Secret.fromSecretPartialArn(this, id, nameOrArn)
      : secretsmanager.Secret.fromSecretNameV2(this, id, nameOrArn);
    this.byName.set(nameOrArn, secret);
    this.secrets.push(secret);
    return secret;
  }

  /** A secret this stack owns, holding a random placeholder until the team puts the key in it. */
  private created(name: string, baseUrl: string): secretsmanager.ISecret {
    const id = `${name.replace(/[^A-Za-z0-9]/g, '')}ApiKey`;
    const secret = new secretsmanager.Secret(this, id, {
      description: `API key of the upstream ${baseUrl} (${name}): replace the placeholder with put-secret-value`,
      generateSecretString: { passwordLength: 32, excludePunctuation: true },
    });
    Validations.of(secret).acknowledge({
      id: 'AwsSolutions-SMG4',
      reason:
        "The secret holds a third-party upstream's API key (OpenAI, DashScope, ...), issued and rotated at that provider; Secrets Manager has no rotation function for it. Rotate by putting the new key in the secret.",
    });
    this.secrets.push(secret);
    new CfnOutput(this, `${id}SecretArn`, {
      key: `${this.outputPrefix}${id}SecretArn`,
      value: secret.secretArn,
      description: `Put the API key of ${baseUrl} here: aws secretsmanager put-secret-value --secret-id <this ARN> --secret-string <key>`,
    });
    return secret;
  }
}
