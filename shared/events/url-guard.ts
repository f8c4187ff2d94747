// Where a webhook may be delivered: an https:// URL whose host resolves only to public unicast
// addresses. Loopback, private, carrier-grade NAT, link-local (169.254.169.254, the instance
// metadata service, is one), unique-local (fd00:ec2::254), multicast and reserved addresses are
// refused, unless the operator allows private URLs (WEBHOOK_ALLOW_PRIVATE_URLS=true: internal
// receivers, tests), which also allows http://.
//
// The check runs when an endpoint is created or changed, and again at every connection (the
// sender's lookup), so a name that later resolves elsewhere (DNS rebinding) is refused then too.
// Redirects are never followed: a 3xx is an answer like any other non-2xx.
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { promisify } from 'node:util';
import ipaddr from 'ipaddr.js';

export interface UrlPolicy {
  allowPrivate: boolean;
}

const lookupAll = promisify(dnsLookup) as unknown as (host: string, options: { all: true }) => Promise<LookupAddress[]>;

/** Whether deliveries may go to this address under the policy. */
export function addressAllowed(address: string, policy: UrlPolicy): boolean {
  if (policy.allowPrivate) return true;
  if (!ipaddr.isValid(address)) return false;
  return ipaddr.process(address).range() === 'unicast';
}

/** Why the URL cannot receive webhooks, or undefined when it can. Resolves the host name. */
export async function webhookUrlProblem(url: string, policy: UrlPolicy): Promise<string | undefined> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return 'it is not a valid URL';
  }
  const schemes = policy.allowPrivate ? ['https:', 'http:'] : ['https:'];
  if (!schemes.includes(parsed.protocol))
    return policy.allowPrivate ? 'it must be an https:// or http:// URL' : 'it must be an https:// URL';
  if (parsed.username || parsed.password) return 'it must not carry a user name or password';
  if (url.length > 2048) return 'it must be at most 2048 characters';
  if (policy.allowPrivate) return undefined;
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  let addresses: LookupAddress[];
  try {
    addresses = await lookupAll(host, { all: true });
  } catch {
    return `its host '${host.slice(0, 64)}' cannot be resolved`;
  }
  if (addresses.length === 0) return `its host '${host.slice(0, 64)}' cannot be resolved`;
  if (addresses.some((a) => !addressAllowed(a.address, policy))) {
    return 'its host resolves to a loopback, private, link-local or otherwise non-public address';
  }
  return undefined;
}

export class BlockedAddressError extends Error {
  override name = 'BlockedAddressError';
}

type LookupCallback = (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for net.connect (undici's connector) that resolves as usual and refuses addresses the
 * policy does not allow, so the connection is made only to an address that was checked.
 */
export function guardedLookup(policy: UrlPolicy) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { family: options.family, hints: options.hints, all: true }, (error, addresses) => {
      if (error) return callback(error, []);
      const list = addresses as LookupAddress[];
      const blocked = list.find((a) => !addressAllowed(a.address, policy));
      if (blocked || list.length === 0) {
        return callback(new BlockedAddressError(`the receiver's address is not public (${hostname})`) as NodeJS.ErrnoException, []);
      }
      if (options.all) return callback(null, list);
      callback(null, list[0]!.address, list[0]!.family);
    });
  };
}
