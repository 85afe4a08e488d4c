import { createHash } from 'node:crypto';
import { hostname as osHostname } from 'node:os';

/**
 * Decisions 7: without `-i`, the client token is derived from the access token and the host
 * name, so a reconnect - and a restart on the same host - presents the same pair and the
 * service does not reject the access token as already used. 64 lower-case hex characters.
 */
export function deriveClientToken(accessToken: string, hostname: string = osHostname()): string {
  return createHash('sha256').update(`${accessToken}:${hostname}`).digest('hex');
}
