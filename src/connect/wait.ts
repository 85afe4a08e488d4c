/**
 * Waiting for the device's end of a new tunnel: DescribeTunnel until its
 * `destinationConnectionState` is CONNECTED (the agent, or the AWS IoT Device Client, got the
 * notification and connected its destination), the tunnel closed, the time is up, or the
 * signal aborts. Polls often at first (an agent that is up connects within a second or two),
 * then every two seconds, which keeps a minute's wait at a few dozen calls. A call that fails for
 * a passing reason (throttling, a server error, the network) is tried again within the wait.
 */
import { ApiError, type TunnelApiClient } from '../api/client';
import { ExitCode, ExitError } from '../exit';
import type { Logger } from '../log';
import { printable } from '../printable';
import { delay } from '../transport/retry';

const FIRST_POLL_MS = 250;
const MAX_POLL_MS = 2000;

/** Worth another try within the wait: throttled, a server error, or no answer from the network. */
function passing(err: unknown): boolean {
  if (err instanceof ApiError) return err.status >= 500 || /throttl|toomanyrequests/i.test(err.type);
  return !(err instanceof ExitError) && typeof (err as NodeJS.ErrnoException)?.code === 'string';
}

interface Described {
  tunnel?: { status?: string; destinationConnectionState?: { status?: string } };
}

export interface WaitOptions {
  client: TunnelApiClient;
  tunnelId: string;
  thingName: string;
  service: string;
  seconds: number;
  signal: AbortSignal;
  log: Logger;
}

/** Resolves once the destination is connected; rejects with a one-line ExitError, or the signal's reason. */
export async function waitForDestination(options: WaitOptions): Promise<void> {
  const { client, tunnelId, signal, log } = options;
  const deadline = Date.now() + options.seconds * 1000;
  let pause = FIRST_POLL_MS;
  let lastError = '';
  log.info(`Waiting up to ${options.seconds} s for the agent of thing ${options.thingName} to connect`);
  for (;;) {
    let described: Described = {};
    try {
      described = await client.call<Described>('DescribeTunnel', { tunnelId });
      lastError = '';
    } catch (err) {
      if (!passing(err)) throw err;
      lastError = printable((err as Error).message);
      log.warn(`DescribeTunnel failed, trying again: ${lastError}`);
    }
    const state = described.tunnel?.destinationConnectionState?.status;
    if (state === 'CONNECTED') {
      log.info(`The agent of thing ${options.thingName} connected`);
      return;
    }
    if (described.tunnel?.status === 'CLOSED') throw new ExitError(ExitCode.FAILURE, `tunnel ${tunnelId} was closed while waiting for the agent of thing ${options.thingName}`);
    const left = deadline - Date.now();
    if (left <= 0) {
      if (lastError) throw new ExitError(ExitCode.FAILURE, `could not learn within ${options.seconds} s (--wait) whether the agent of thing ${options.thingName} connected: DescribeTunnel failed: ${lastError}`);
      throw new ExitError(ExitCode.FAILURE, `the agent of thing ${options.thingName} did not connect within ${options.seconds} s (--wait): is 'localproxy agent --thing-name ${options.thingName}' (or the AWS IoT Device Client) running on the device, with service ${options.service}?`);
    }
    await delay(Math.min(pause, left), signal);
    pause = Math.min(MAX_POLL_MS, Math.round(pause * 1.5));
  }
}
