/**
 * The management API, shaped like the cloud's: AWS JSON 1.1 (`POST /`,
 * `X-Amz-Target: IoTSecuredTunneling.<Operation>`), SigV4-signed, epoch-second timestamps.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log';
import { printable } from '../printable';
import { verifySigV4, type Credentials } from './sigv4';
import { RegistryError, type ClientMode, type OpenedTunnel, type OpenTunnelRequest, type TunnelRecord, type TunnelRegistry } from './tunnels';

export type { Credentials } from './sigv4';

const TARGET_PREFIX = 'IoTSecuredTunneling.';
const MAX_BODY_BYTES = 64 * 1024;
const DEFAULT_PAGE = 50;
const MAX_PAGE = 100;
const CONTENT_TYPE = 'application/x-amz-json-1.1';

export interface ApiContext {
  registry: TunnelRegistry;
  credentials?: Credentials;
  log: Logger;
  /** Opens tunnels through the relay so they are logged the same way as in-process ones. */
  relay: {
    openTunnel(req?: OpenTunnelRequest): OpenedTunnel;
    rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: { thingName?: string; services?: string[] }): { sourceAccessToken?: string; destinationAccessToken?: string };
  };
}

class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  constructor(status: number, type: string, message: string) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

function send(res: ServerResponse, status: number, body: unknown, errorType?: string): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(text) };
  if (errorType) headers['x-amzn-errortype'] = errorType;
  if (status === 413) headers.connection = 'close';
  res.writeHead(status, headers).end(text);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // The rest is not read: the 413 goes out with `connection: close`, which ends the socket.
        req.off('data', onData);
        req.pause();
        chunks.length = 0;
        reject(new ApiError(413, 'ValidationException', `Request body exceeds ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

const seconds = (ms: number) => ms / 1000;

function connectionState(endpoint: TunnelRecord['source']) {
  return { status: endpoint.connected ? 'CONNECTED' : 'DISCONNECTED', lastUpdatedAt: seconds(endpoint.lastUpdatedAt) };
}

function describe(t: TunnelRecord) {
  return {
    tunnelId: t.tunnelId,
    tunnelArn: t.tunnelArn,
    status: t.status,
    sourceConnectionState: connectionState(t.source),
    destinationConnectionState: connectionState(t.destination),
    description: t.description,
    destinationConfig: { thingName: t.thingName, services: t.services },
    timeoutConfig: { maxLifetimeTimeoutMinutes: t.lifetimeMinutes },
    tags: [],
    createdAt: seconds(t.createdAt),
    lastUpdatedAt: seconds(t.lastUpdatedAt),
  };
}

function str(input: Record<string, unknown>, key: string, required = true): string | undefined {
  const value = input[key];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value === '') throw new ApiError(400, 'ValidationException', `${key} is required and must be a string`);
  return value;
}

function runOperation(op: string, input: Record<string, unknown>, ctx: ApiContext): unknown {
  const { registry } = ctx;
  switch (op) {
    case 'OpenTunnel': {
      const destination = (input.destinationConfig ?? {}) as { services?: unknown; thingName?: unknown };
      const timeout = (input.timeoutConfig ?? {}) as { maxLifetimeTimeoutMinutes?: unknown };
      if (destination.services !== undefined && !Array.isArray(destination.services)) throw new ApiError(400, 'ValidationException', 'destinationConfig.services must be a list');
      return ctx.relay.openTunnel({
        services: destination.services as string[] | undefined,
        lifetimeMinutes: timeout.maxLifetimeTimeoutMinutes as number | undefined,
        description: typeof input.description === 'string' ? input.description : undefined,
        thingName: typeof destination.thingName === 'string' ? destination.thingName : undefined,
      } as OpenTunnelRequest);
    }
    case 'CloseTunnel':
      registry.close(str(input, 'tunnelId')!, { delete: input.delete === true });
      return {};
    case 'DescribeTunnel':
      return { tunnel: describe(registry.get(str(input, 'tunnelId')!)) };
    case 'ListTunnels': {
      const thingName = str(input, 'thingName', false);
      const max = input.maxResults === undefined ? DEFAULT_PAGE : Number(input.maxResults);
      if (!Number.isInteger(max) || max < 1 || max > MAX_PAGE) throw new ApiError(400, 'ValidationException', `maxResults must be from 1 to ${MAX_PAGE}`);
      const all = registry.list().filter((t) => thingName === undefined || t.thingName === thingName);
      let start = 0;
      const token = str(input, 'nextToken', false);
      if (token !== undefined) {
        start = Number.parseInt(Buffer.from(token, 'base64url').toString(), 10);
        if (!Number.isInteger(start) || start < 0) throw new ApiError(400, 'ValidationException', 'Invalid nextToken');
      }
      const page = all.slice(start, start + max);
      const next = start + max < all.length ? Buffer.from(String(start + max)).toString('base64url') : undefined;
      return {
        tunnelSummaries: page.map((t) => ({ tunnelId: t.tunnelId, tunnelArn: t.tunnelArn, status: t.status, description: t.description, createdAt: seconds(t.createdAt), lastUpdatedAt: seconds(t.lastUpdatedAt) })),
        nextToken: next,
      };
    }
    case 'RotateTunnelAccessToken': {
      const tunnelId = str(input, 'tunnelId')!;
      const mode = str(input, 'clientMode') as ClientMode;
      // Through the relay: a destinationConfig.thingName (else the tunnel's) is notified of the new token.
      const destination = (input.destinationConfig ?? {}) as { services?: unknown; thingName?: unknown };
      const tokens = ctx.relay.rotateAccessToken(tunnelId, mode, {
        thingName: typeof destination.thingName === 'string' ? destination.thingName : undefined,
        services: Array.isArray(destination.services) ? destination.services.filter((id): id is string => typeof id === 'string') : undefined,
      });
      return { tunnelArn: registry.get(tunnelId).tunnelArn, ...tokens };
    }
    default:
      throw new ApiError(400, 'UnknownOperationException', `Unknown operation ${op}`);
  }
}

/** Handles one `POST /` request; never throws. */
export async function handleApiRequest(req: IncomingMessage, res: ServerResponse, ctx: ApiContext): Promise<void> {
  let op = '';
  try {
    const body = await readBody(req);
    if (!ctx.credentials) throw new ApiError(403, 'MissingAuthenticationTokenException', 'The management API is disabled: the relay has no credentials configured');
    const failure = await verifySigV4({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body }, ctx.credentials);
    if (failure) throw new ApiError(403, failure.type, failure.message);
    const target = String(req.headers['x-amz-target'] ?? '');
    if (!target.startsWith(TARGET_PREFIX)) throw new ApiError(400, 'UnknownOperationException', `Missing or unknown X-Amz-Target ${JSON.stringify(target)}`);
    op = target.slice(TARGET_PREFIX.length);
    let input: unknown;
    try {
      input = body.length ? JSON.parse(body.toString('utf8')) : {};
    } catch {
      throw new ApiError(400, 'SerializationException', 'Request body is not valid JSON');
    }
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new ApiError(400, 'SerializationException', 'Request body must be a JSON object');
    const output = runOperation(op, input as Record<string, unknown>, ctx);
    ctx.log.debug(`api: ${op} ok`);
    send(res, 200, output);
  } catch (err) {
    let apiError: ApiError;
    if (err instanceof ApiError) apiError = err;
    else if (err instanceof RegistryError) apiError = new ApiError(err.type === 'ResourceNotFoundException' ? 404 : 400, err.type, err.message);
    else apiError = new ApiError(500, 'InternalFailure', 'Internal error');
    if (apiError.status === 500) ctx.log.error(`api: ${op || 'request'} failed: ${(err as Error).message}`);
    else ctx.log.info(`api: ${op || 'request'} refused: ${apiError.type}: ${printable(apiError.message)}`);
    if (!res.headersSent) send(res, apiError.status, { __type: apiError.type, message: apiError.message }, apiError.type);
  }
}
