/**
 * In-process relay nodes sharing one Redis (startRelay with `store` and `cluster`), each with
 * its own log lines to await, its peer events and an API client.
 */
import { TunnelApiClient } from '../../src/api/client';
import { Logger } from '../../src/log';
import type { Clock } from '../../src/relay/clock';
import type { RelayLimits } from '../../src/relay/limits';
import { startRelay, type Relay } from '../../src/relay/server';
import { Lines } from '../agent/lines';
import { freePort } from '../helpers/wait';
import { EventLog } from './events';

export const CREDENTIALS = { accessKeyId: 'AKIDCLUSTERTEST', secretAccessKey: 'cluster-test-secret-key' };
export const SECRET = Buffer.from('a cluster secret for the tests');

export interface TestNode {
  relay: Relay;
  name: string;
  lines: Lines;
  events: EventLog;
  api: TunnelApiClient;
  close(): Promise<void>;
}

/** `tls`: the node serves wss:// (a self-signed certificate) and is reached over it. */
export async function startNode(redisUrl: string, name: string, options: { clock?: Clock; limits?: Partial<RelayLimits>; leaseMs?: number; waitReady?: boolean; tls?: boolean; secret?: Buffer } = {}): Promise<TestNode> {
  const lines = new Lines();
  const events = new EventLog();
  const port = await freePort();
  const relay = await startRelay({
    host: '127.0.0.1',
    port,
    tls: options.tls ? 'self-signed' : 'plain',
    store: { url: redisUrl },
    cluster: { nodeUrl: `${options.tls ? 'wss' : 'ws'}://127.0.0.1:${port}`, secret: options.secret ?? SECRET, nodeId: name, ...(options.leaseMs ? { leaseMs: options.leaseMs } : {}) },
    credentials: CREDENTIALS,
    log: new Logger({ level: 6, id: name, sink: lines.sink }),
    onEvent: events.onEvent,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.limits ? { limits: options.limits } : {}),
  });
  if (options.waitReady !== false) await lines.waitFor(/tunnel store \S+ connected/, 10_000, `${name} connected to Redis`);
  const api = new TunnelApiClient({ endpoint: relay.url.replace(/^ws/, 'http'), region: 'eu-west-1', credentials: CREDENTIALS, ca: relay.caPem });
  return { relay, name, lines, events, api, close: () => relay.close() };
}

/** GET /health: the status code. */
export async function health(relay: Relay): Promise<number> {
  const res = await fetch(`${relay.url.replace(/^ws/, 'http')}/health`);
  await res.text();
  return res.status;
}
