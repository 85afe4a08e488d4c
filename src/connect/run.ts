/**
 * `localproxy connect`, the run: OpenTunnel for the thing with one service, wait until its
 * destination is connected (wait.ts), a source proxy in this process for the tunnel's source
 * token (stdin/stdout or a listener), and CloseTunnel when it is over, whatever ended it (unless
 * --keep). SIGINT, SIGTERM and SIGHUP (which ssh sends its ProxyCommand as it exits) end it the
 * same way; a second signal exits at once and leaves the tunnel to its lifetime.
 */
import { connectApi, apiFailure, type ApiSetup } from '../api/setup';
import { parseEndpoint, regionEndpoint } from '../cli/endpoint';
import { reportError } from '../cli/report';
import { reportStdioOutcome, STDIO_SIGNALS } from '../cli/run';
import { ExitCode, ExitError, exitCodeOf } from '../exit';
import { Logger } from '../log';
import { printable } from '../printable';
import { defaultSettings } from '../settings';
import { startProxy, type LocalProxy, type ProxyOutcome } from '../tunnel/proxy';
import { PRODUCT } from '../version';
import type { SourceTarget } from '../options';
import { waitForDestination } from './wait';

const NAME = `${PRODUCT} connect`;

interface Opened {
  tunnelId: string;
  sourceAccessToken: string;
  destinationAccessToken: string;
}

/** What `localproxy connect` was asked to do (cli.ts parses it). */
export interface ConnectRequest {
  thingName: string;
  service: string;
  /** stdio (ProxyCommand) or where to listen. */
  target: SourceTarget;
  waitSeconds: number;
  lifetimeMinutes?: number;
  keep: boolean;
  logLevel: number;
  /** The common API options, as parsed. */
  api: Record<string, string | true | undefined>;
}

/** Where the tunnel's data plane is: the relay's own port, or the region's cloud endpoint. */
function dataPlane(request: ConnectRequest, api: ApiSetup): { host: string; port: number } {
  if (typeof request.api.endpoint === 'string') {
    const url = new URL(request.api.endpoint);
    return { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port ? Number(url.port) : 443 };
  }
  return parseEndpoint(regionEndpoint(api.region, defaultSettings()));
}

/** What to type to use the tunnel: for an ssh service, ssh with the thing's name for its host key. */
function usage(request: ConnectRequest, host: string, port: number): string {
  const shown = host.includes(':') ? `[${host}]` : host;
  const command = /ssh/i.test(request.service)
    ? `ssh -p ${port} -o HostKeyAlias=${request.thingName} USER@${host}`
    : `connect to ${shown}:${port}`;
  return `${request.service} of ${request.thingName} listens on ${shown}:${port}; ${command}\n`;
}

export async function connect(request: ConnectRequest): Promise<number> {
  const log = new Logger({ level: request.logLevel });
  const fail = (err: ExitError) => reportError(err, { command: 'connect', scrub: (text) => log.scrub(text) });
  let api: ApiSetup;
  try {
    api = await connectApi(request.api);
  } catch (err) {
    if (!(err instanceof ExitError)) throw err;
    return fail(err);
  }
  const abort = new AbortController();
  let proxy: LocalProxy | undefined;
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      log.warn(`Received ${signal} again, exiting now`);
      process.exit(ExitCode.OK);
    }
    stopping = true;
    log.info(`Received ${signal}, closing`);
    abort.abort(new Error(signal));
    void proxy?.close();
  };
  for (const signal of STDIO_SIGNALS) process.on(signal, onSignal);
  let opened: Opened | undefined;
  try {
    const input: Record<string, unknown> = { destinationConfig: { thingName: request.thingName, services: [request.service] } };
    if (request.lifetimeMinutes !== undefined) input.timeoutConfig = { maxLifetimeTimeoutMinutes: request.lifetimeMinutes };
    try {
      opened = await api.client.call<Opened>('OpenTunnel', input);
    } catch (err) {
      return fail(err instanceof ExitError ? err : new ExitError(ExitCode.FAILURE, `OpenTunnel failed: ${apiFailure(err, api)}`));
    }
    log.redact(opened.sourceAccessToken);
    log.redact(opened.destinationAccessToken);
    log.info(`Opened tunnel ${opened.tunnelId} to thing ${request.thingName} for service ${request.service}`);
    const outcome = await carry(request, api, opened, log, abort.signal, (p) => { proxy = p; if (stopping) void p.close(); });
    const code = outcome instanceof ExitError ? fail(outcome) : ended(request, outcome, log);
    const closed = await closeTunnel(request, api, opened, log);
    if (closed === undefined) return code;
    const closeCode = fail(closed);
    return code === ExitCode.OK ? closeCode : code;
  } finally {
    for (const signal of STDIO_SIGNALS) process.off(signal, onSignal);
  }
}

/** Waits for the destination, then runs the source until it is over; a one-line error, or how the proxy ended. */
async function carry(request: ConnectRequest, api: ApiSetup, opened: Opened, log: Logger, signal: AbortSignal, started: (proxy: LocalProxy) => void): Promise<ProxyOutcome | ExitError> {
  try {
    await waitForDestination({ client: api.client, tunnelId: opened.tunnelId, thingName: request.thingName, service: request.service, seconds: request.waitSeconds, signal, log });
  } catch (err) {
    if (signal.aborted) return { kind: 'closed', message: 'stopped while waiting for the agent' };
    if (err instanceof ExitError) return err;
    return new ExitError(ExitCode.FAILURE, `DescribeTunnel failed: ${apiFailure(err, api)}`);
  }
  const proxy = startProxy({
    mode: 'source',
    accessToken: opened.sourceAccessToken,
    endpoint: dataPlane(request, api),
    services: new Map([[request.service, request.target]]),
    ca: api.ca === undefined ? undefined : [api.ca],
    settings: defaultSettings(),
    log,
  });
  started(proxy);
  if (request.target.kind === 'tcp') {
    const { host } = request.target;
    proxy.ready.then(() => {
      process.stdout.write(usage(request, host ?? 'localhost', proxy.ports().get(request.service) ?? 0));
    }, () => {});
  }
  return proxy.done;
}

/** The exit code for how the source ended; over stdin/stdout, the one line that says why it did not end well. */
function ended(request: ConnectRequest, outcome: ProxyOutcome, log: Logger): number {
  if (request.target.kind === 'stdio') reportStdioOutcome(outcome, log, (text) => process.stderr.write(text), NAME);
  return exitCodeOf(outcome);
}

/** CloseTunnel, unless --keep; the error when it failed. */
async function closeTunnel(request: ConnectRequest, api: ApiSetup, opened: Opened, log: Logger): Promise<ExitError | undefined> {
  if (request.keep) {
    log.info(`Leaving tunnel ${opened.tunnelId} open (--keep)`);
    return undefined;
  }
  try {
    await api.client.call('CloseTunnel', { tunnelId: opened.tunnelId });
    log.info(`Closed tunnel ${opened.tunnelId}`);
    return undefined;
  } catch (err) {
    const why = err instanceof ExitError ? err.message : apiFailure(err, api);
    return new ExitError(ExitCode.FAILURE, `could not close tunnel ${printable(opened.tunnelId)} (it ends with its lifetime): ${why}`);
  }
}
