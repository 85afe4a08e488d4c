/**
 * The management API, shaped like the cloud's: AWS JSON 1.1 (`POST /`,
 * `X-Amz-Target: IoTSecuredTunneling.<Operation>`), SigV4-signed, epoch-second timestamps,
 * the service model's validation (shapes.ts) and its error types with the HTTP status the
 * AWS SDKs expect.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ClientMode, DestinationConfig, OpenedTunnel, RotatedTokens, Tag } from '../api/model';
import { LogLevel, type Logger } from '../log';
import { printable } from '../printable';
import { ConstraintError, isOperation, SerializationError, SHAPES, validateInput, type OpenTunnelInput, type Operation } from './shapes';
import { verifySigV4, type Credentials } from './sigv4';
import { StoreUnavailableError, type ListPosition, type TunnelDirectory } from './store/directory';
import { StateWriteError } from './store/journal';
import type { TunnelRecord } from './store/record';
import { OperationError, type OpenTunnelRequest } from './store/rules';

export type { Credentials } from './sigv4';

const TARGET_PREFIX = 'IoTSecuredTunneling.';
const DEFAULT_PAGE = 50;
const CONTENT_TYPE = 'application/x-amz-json-1.1';

export interface ApiContext {
  directory: TunnelDirectory;
  credentials?: Credentials;
  log: Logger;
  /** Opens tunnels through the relay so they are logged the same way as in-process ones. */
  relay: {
    openTunnel(req: OpenTunnelRequest, region?: string): Promise<OpenedTunnel>;
    /** Through the relay: the tunnel's thing is notified of a new destination token. */
    rotateAccessToken(tunnelId: string, mode: ClientMode, destination?: DestinationConfig): Promise<RotatedTokens>;
  };
  maxBodyBytes: number;
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

/** The body ended early: the client went away or the request timed out (Node answers 408 then). */
class BodyAborted extends Error {}

/** HTTP status per AWS error type, as the cloud's JSON services send them. */
const STATUS: Record<string, number> = {
  ResourceNotFoundException: 404,
  ValidationException: 400,
  LimitExceededException: 400,
  SerializationException: 400,
  UnknownOperationException: 400,
};

function send(res: ServerResponse, status: number, body: unknown, errorType?: string): void {
  const text = JSON.stringify(body);
  const headers: Record<string, string | number> = { 'content-type': CONTENT_TYPE, 'content-length': Buffer.byteLength(text) };
  if (errorType) headers['x-amzn-errortype'] = errorType;
  if (status === 413) headers.connection = 'close';
  res.writeHead(status, headers).end(text);
}

function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > maxBytes) {
      req.resume();
      reject(new ApiError(413, 'ValidationException', `Request body exceeds ${maxBytes} bytes`));
      return;
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        // The rest is not kept: the 413 goes out with `connection: close`, which ends the socket.
        req.off('data', onData);
        req.resume();
        chunks.length = 0;
        reject(new ApiError(413, 'ValidationException', `Request body exceeds ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', () => reject(new BodyAborted()));
    req.on('aborted', () => reject(new BodyAborted()));
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
    tags: t.tags,
    createdAt: seconds(t.createdAt),
    lastUpdatedAt: seconds(t.lastUpdatedAt),
  };
}

/** ListTunnels paging: the position after the last tunnel of a page, stable while tunnels come and go. */
function pageToken(t: ListPosition): string {
  return Buffer.from(`${t.createdAt}/${t.tunnelId}`).toString('base64url');
}

function afterToken(token: string): ListPosition {
  const m = /^(\d+(?:\.\d+)?)\/(.+)$/.exec(Buffer.from(token, 'base64url').toString('utf8'));
  if (!m) throw new ApiError(400, 'ValidationException', 'Invalid nextToken');
  return { createdAt: Number(m[1]), tunnelId: m[2] };
}

/** Runs one validated operation; resolves with its output once any change is durable. */
async function runOperation(op: Operation, body: unknown, region: string, ctx: ApiContext): Promise<unknown> {
  const { directory } = ctx;
  switch (op) {
    case 'OpenTunnel': {
      const input = validateInput<OpenTunnelInput>(body, SHAPES.OpenTunnel);
      return ctx.relay.openTunnel({
        services: input.destinationConfig?.services,
        thingName: input.destinationConfig?.thingName,
        lifetimeMinutes: input.timeoutConfig?.maxLifetimeTimeoutMinutes,
        description: input.description,
        tags: input.tags,
      }, region);
    }
    case 'CloseTunnel': {
      const input = validateInput<{ tunnelId: string; delete?: boolean }>(body, SHAPES.CloseTunnel);
      await directory.close(input.tunnelId, { delete: input.delete === true });
      return {};
    }
    case 'DescribeTunnel': {
      const input = validateInput<{ tunnelId: string }>(body, SHAPES.DescribeTunnel);
      return { tunnel: describe(await directory.get(input.tunnelId)) };
    }
    case 'ListTunnels': {
      const input = validateInput<{ thingName?: string; maxResults?: number; nextToken?: string }>(body, SHAPES.ListTunnels);
      const after = input.nextToken === undefined ? undefined : afterToken(input.nextToken);
      const page = await directory.list({ thingName: input.thingName, after, max: input.maxResults ?? DEFAULT_PAGE });
      return {
        tunnelSummaries: page.tunnels.map((t) => ({ tunnelId: t.tunnelId, tunnelArn: t.tunnelArn, status: t.status, description: t.description, createdAt: seconds(t.createdAt), lastUpdatedAt: seconds(t.lastUpdatedAt) })),
        nextToken: page.next ? pageToken(page.next) : undefined,
      };
    }
    case 'RotateTunnelAccessToken': {
      const input = validateInput<{ tunnelId: string; clientMode: ClientMode; destinationConfig?: DestinationConfig }>(body, SHAPES.RotateTunnelAccessToken);
      const tokens = await ctx.relay.rotateAccessToken(input.tunnelId, input.clientMode, input.destinationConfig);
      return { tunnelArn: (await directory.get(input.tunnelId)).tunnelArn, ...tokens };
    }
    case 'TagResource': {
      const input = validateInput<{ resourceArn: string; tags: Tag[] }>(body, SHAPES.TagResource);
      await directory.tag(input.resourceArn, input.tags);
      return {};
    }
    case 'UntagResource': {
      const input = validateInput<{ resourceArn: string; tagKeys: string[] }>(body, SHAPES.UntagResource);
      await directory.untag(input.resourceArn, input.tagKeys);
      return {};
    }
    case 'ListTagsForResource': {
      const input = validateInput<{ resourceArn: string }>(body, SHAPES.ListTagsForResource);
      return { tags: (await directory.getByArn(input.resourceArn)).tags };
    }
  }
}

function signingRegion(authorization: string | undefined): string | undefined {
  return /Credential=[^/]+\/\d{8}\/([^/]+)\//.exec(authorization ?? '')?.[1];
}

/** Handles one `POST /` request; never throws. */
export async function handleApiRequest(req: IncomingMessage, res: ServerResponse, ctx: ApiContext): Promise<void> {
  let op = '';
  try {
    const body = await readBody(req, ctx.maxBodyBytes);
    if (!ctx.credentials) throw new ApiError(403, 'MissingAuthenticationTokenException', 'The management API is disabled: the relay has no credentials configured');
    const failure = await verifySigV4({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers, body }, ctx.credentials);
    if (failure) throw new ApiError(403, failure.type, failure.message);
    const target = String(req.headers['x-amz-target'] ?? '');
    if (!target.startsWith(TARGET_PREFIX)) throw new ApiError(400, 'UnknownOperationException', `Missing or unknown X-Amz-Target ${JSON.stringify(target.slice(0, 100))}`);
    op = target.slice(TARGET_PREFIX.length);
    if (!isOperation(op)) throw new ApiError(400, 'UnknownOperationException', `Unknown operation ${op.slice(0, 100)}`);
    let input: unknown;
    try {
      input = body.length ? JSON.parse(body.toString('utf8')) : {};
    } catch {
      throw new ApiError(400, 'SerializationException', 'Request body is not valid JSON');
    }
    if (typeof input !== 'object' || input === null || Array.isArray(input)) throw new ApiError(400, 'SerializationException', 'Request body must be a JSON object');
    const output = await runOperation(op, input, signingRegion(String(req.headers.authorization ?? '')) ?? 'local', ctx);
    ctx.log.debug(`api: ${op} ok`);
    send(res, 200, output);
  } catch (err) {
    if (err instanceof BodyAborted) {
      // Node has answered a timeout with 408 already, or the client is gone: nothing to send.
      ctx.log.limited(LogLevel.DEBUG, 'api-aborted', 'api: a request body ended early (client gone or request timeout)');
      return;
    }
    let apiError: ApiError;
    if (err instanceof ApiError) apiError = err;
    else if (err instanceof SerializationError) apiError = new ApiError(400, 'SerializationException', err.message);
    else if (err instanceof ConstraintError) apiError = new ApiError(400, 'ValidationException', err.message);
    else if (err instanceof OperationError) apiError = new ApiError(STATUS[err.type] ?? 400, err.type, err.message);
    else if (err instanceof StateWriteError) apiError = new ApiError(503, 'ServiceUnavailableException', `${err.message}; ${op === 'OpenTunnel' ? 'no tunnel was opened' : 'the change applies until the relay restarts'}`);
    else if (err instanceof StoreUnavailableError) apiError = new ApiError(503, 'ServiceUnavailableException', `${err.publicMessage}; try again`);
    else apiError = new ApiError(500, 'InternalFailure', 'Internal error');
    if (err instanceof StateWriteError) ctx.log.limited(LogLevel.WARNING, 'api-unsaved', `api: ${op} answered HTTP 503: the state file cannot be written`);
    else if (err instanceof StoreUnavailableError) ctx.log.limited(LogLevel.WARNING, 'api-store-down', `api: ${op} answered HTTP 503: ${err.message}`);
    else if (apiError.status >= 500) ctx.log.error(`api: ${op || 'request'} failed: ${(err as Error).message}`);
    else ctx.log.limited(LogLevel.INFO, 'api-refused', `api: ${printable(op) || 'request'} refused: ${apiError.type}: ${printable(apiError.message)}`);
    if (!res.headersSent && !res.socket?.destroyed) send(res, apiError.status, { __type: apiError.type, message: apiError.message }, apiError.type);
  }
}
