/**
 * One attempt to open the tunnel's WebSocket to the service (behaviour spec 3.1-3.5):
 * TCP (directly or through a web proxy), TLS 1.2+, then the upgrade
 * `GET /tunnel?local-proxy-mode=...` with the access and client tokens.
 * Every failure is a ConnectError; only an HTTP 4xx is `refused`.
 */
import type { IncomingMessage, ClientRequest } from 'node:http';
import type { Duplex } from 'node:stream';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { printable } from '../printable';
import { MAX_WS_MESSAGE_BYTES, subprotocolVersion, type ProtocolVersion } from '../protocol/constants';
import { CREDIT_EXTENSION, EXTENSIONS_HEADER, parseExtensions } from '../protocol/extension';
import type { Mode, ProxyOptions } from '../options';
import { PRODUCT, VERSION } from '../version';
import { namesInSubjectAltName, nativeStoreCertificates, trustedCertificates, warnCaProblems } from './ca';
import { deriveClientToken } from './client-token';
import { ConnectError, ConnectErrorCode, describeError, oneLine } from './errors';
import { openProxyTunnel } from './http-connect';
import { answerPings } from './keepalive';
import { hostPort, isCertificateError, tcpConnect, tlsHandshake } from './sockets';
import { describeProxy, shouldBypassProxy } from './web-proxy';

export interface ServiceConnection {
  /** Open, binaryType 'nodebuffer'. The caller attaches its listeners at once. */
  ws: WebSocket;
  /** The `channel-id` response header ('' if absent). */
  channelId: string;
  /** The negotiated Sec-WebSocket-Protocol. */
  subprotocol: string;
  version: ProtocolVersion;
  /** Extensions the service says it forwards to us (`localproxy-extensions` response header; protocol/extension.ts). */
  extensions: string[];
}

/** Bound on one whole attempt to reach the service: TCP, web proxy, TLS and upgrade. */
export const SERVICE_CONNECT_TIMEOUT_MS = 30_000;
/** Room above the largest message a peer may send, for a service that packs a little more. */
const MAX_PAYLOAD_SLACK_BYTES = 64 * 1024;
/** How much of a refusal's body we read for its reason. */
const REFUSAL_BODY_MAX_BYTES = 4096;
/** How long we wait for the rest of a refusal's body: the status alone already decides. */
const REFUSAL_BODY_TIMEOUT_MS = 2000;

export const USER_AGENT = `${PRODUCT}/${VERSION} (node ${process.versions.node}; ${process.platform} ${process.arch})`;

export interface ConnectOptions {
  /** Overrides SERVICE_CONNECT_TIMEOUT_MS (tests). */
  timeoutMs?: number;
}

/** ws's `generateMask`: the all-zero key (see `upgrade` for why). */
function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/**
 * One attempt. Resolves with an open WebSocket; rejects with a ConnectError (`refused`
 * for an HTTP 4xx), or with `signal.reason` when aborted.
 */
export async function connectToService(options: ProxyOptions, signal?: AbortSignal, connectOptions: ConnectOptions = {}): Promise<ServiceConnection> {
  signal?.throwIfAborted();
  const { log } = options;
  const { host, port } = options.endpoint;
  const endpoint = `wss://${hostPort(host, port)}`;
  const clientToken = options.clientToken || deriveClientToken(options.accessToken);
  log.redact(options.accessToken);
  log.redact(clientToken);
  const proxyPassword = options.webProxy?.auth?.split(':').slice(1).join(':');
  log.redact(proxyPassword);
  log.info(`Attempting to establish web socket connection with endpoint ${endpoint}`);
  if (options.insecure) log.warn('SECURITY WARNING: SSL host verification is disabled - connection is vulnerable to MITM attacks');

  const timeoutMs = connectOptions.timeoutMs ?? SERVICE_CONNECT_TIMEOUT_MS;
  let stage = 'connecting';
  const attempt = new AbortController();
  const onAbort = (): void => attempt.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => {
    attempt.abort(new ConnectError(ConnectErrorCode.TIMEOUT, `Connecting to ${endpoint} timed out after ${timeoutMs / 1000} s (${stage})`));
  }, timeoutMs);

  let socket: Duplex | undefined;
  try {
    const { ca, problems } = await trustedCertificates(options, attempt.signal);
    warnCaProblems(log, problems);

    const proxy = options.webProxy && !shouldBypassProxy(host, options.noProxy, port) ? options.webProxy : undefined;
    if (proxy) {
      stage = `through web proxy ${describeProxy(proxy)}`;
      socket = await openProxyTunnel({ proxy, target: { host, port }, ca, insecure: options.insecure, log, signal: attempt.signal });
    } else {
      if (options.webProxy) log.debug(`Not using the web proxy for ${host}: it is listed in NO_PROXY`);
      stage = 'TCP connect';
      socket = await tcpConnect(host, port, attempt.signal).catch((err) => {
        throw attempt.signal.aborted ? attempt.signal.reason : tcpError(err, host);
      });
      log.debug(`Connected successfully with proxy server ${hostPort(host, port)}`);
    }

    stage = 'TLS handshake';
    const raw: Duplex = socket;
    socket = await tlsHandshake(raw, host, { ca, rejectUnauthorized: !options.insecure }, attempt.signal).catch((err) => {
      throw attempt.signal.aborted ? attempt.signal.reason : tlsError(err, host);
    });

    stage = 'WebSocket upgrade';
    const connection = await upgrade(socket as TLSSocket, options, clientToken, attempt.signal);
    log.info(`Web socket session ID: ${printable(connection.channelId)}`);
    log.debug(`Web socket subprotocol selected: ${connection.subprotocol}`);
    log.info(`Successfully established websocket connection with proxy server: ${endpoint}`);
    return connection;
  } catch (err) {
    socket?.destroy();
    if (signal?.aborted) throw signal.reason;
    if (attempt.signal.aborted) throw attempt.signal.reason;
    throw err;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

function tcpError(err: unknown, host: string): ConnectError {
  if ((err as NodeJS.ErrnoException).syscall === 'getaddrinfo') {
    return new ConnectError(ConnectErrorCode.DNS, `Could not resolve DNS hostname of proxy host: ${host} - ${describeError(err)}`, { cause: err });
  }
  return new ConnectError(ConnectErrorCode.TCP, `Could not connect to proxy server: ${describeError(err)}`, { cause: err });
}

function tlsError(err: unknown, host: string): ConnectError {
  if ((err as NodeJS.ErrnoException).code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    // The CA is trusted: only the name differs. Trusting another CA would not help.
    const cert = (err as { cert?: PeerCertificate }).cert;
    const names = namesInSubjectAltName(cert?.subjectaltname);
    if (names.length === 0 && typeof cert?.subject?.CN === 'string') names.push(printable(cert.subject.CN, 253));
    const asked = printable(host, 253);
    return new ConnectError(
      ConnectErrorCode.CERTIFICATE,
      `Could not perform SSL handshake with proxy server: its certificate is for ${names.join(', ') || 'no name'}, not for ${asked}: `
        + `give -e one of those names, or give the service a certificate naming ${asked} (localproxy relay --tls-name ${asked})`,
      { cause: err },
    );
  }
  if (isCertificateError(err)) {
    const native = nativeStoreCertificates().unavailable;
    return new ConnectError(
      ConnectErrorCode.CERTIFICATE,
      `Could not perform SSL handshake with proxy server: certificate verify failed: ${describeError(err)}; trust its CA with -c FILE (or a directory of CA files), or check the endpoint${native ? ` (${native})` : ''}`,
      { cause: err },
    );
  }
  return new ConnectError(ConnectErrorCode.TLS, `Could not perform SSL handshake with proxy server: ${describeError(err)}`, { cause: err });
}

/** The WebSocket upgrade over an established TLS socket. */
function upgrade(socket: TLSSocket, options: ProxyOptions, clientToken: string, signal: AbortSignal): Promise<ServiceConnection> {
  const { host, port } = options.endpoint;
  const requested = options.settings.subprotocol;
  return new Promise((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(`wss://${hostPort(host, port)}/tunnel?local-proxy-mode=${options.mode}`, [requested], {
        createConnection: (() => socket) as unknown as WebSocket.ClientOptions['createConnection'],
        headers: {
          'access-token': options.accessToken,
          'client-token': clientToken,
          'User-Agent': USER_AGENT,
          // Asks a service that knows the extension (our relay) to forward its messages to us.
          ...(options.settings.creditExtension === 'off' ? {} : { [EXTENSIONS_HEADER]: CREDIT_EXTENSION }),
        },
        perMessageDeflate: false,
        followRedirects: false,
        // RFC 6455 masking protects browsers' intermediaries from script-chosen bytes; it
        // adds nothing inside TLS for a non-browser client, and ws's pure-JS XOR loop (the
        // native bufferutil cannot live in a single executable) costs more CPU than TLS.
        // An all-zero key makes masking and unmasking no-ops for ws on both ends; any
        // server accepts it, as the key is the client's choice.
        generateMask: zeroMask,
        maxPayload: Math.max(options.settings.maxFrameSize, MAX_WS_MESSAGE_BYTES) + MAX_PAYLOAD_SLACK_BYTES,
        // Pings are answered by answerPings(): ws's own answering disconnects a paused tunnel.
        autoPong: false,
      });
    } catch (err) {
      reject(new ConnectError(ConnectErrorCode.HANDSHAKE, `Cannot start the websocket upgrade: ${describeError(err)} (websocket.subprotocol is "${requested}")`, { cause: err }));
      return;
    }
    ws.binaryType = 'nodebuffer';
    answerPings(ws);
    let channelId = '';
    let extensions: string[] = [];
    let offered: string | undefined;
    let settled = false;

    function onUpgrade(res: IncomingMessage): void {
      channelId = headerValue(res.headers['channel-id']);
      offered = res.headers['sec-websocket-protocol'] as string | undefined;
      extensions = parseExtensions(res.headers[EXTENSIONS_HEADER]);
    }
    function onUnexpectedResponse(req: ClientRequest, res: IncomingMessage): void {
      readReason(res).then((reason) => {
        req.destroy();
        fail(statusError(res, reason, options.mode));
      });
    }
    function onOpen(): void {
      const version = subprotocolVersion(ws.protocol);
      if (version === 0) {
        fail(new ConnectError(ConnectErrorCode.SUBPROTOCOL, `Service chose websocket subprotocol "${printable(ws.protocol)}", which is not one this proxy speaks (requested "${requested}")`));
        return;
      }
      settled = true;
      detach();
      resolve({ ws, channelId, subprotocol: ws.protocol, version, extensions });
    }
    function onError(err: Error): void {
      if (/subprotocol/i.test(err.message)) {
        const what = offered === undefined ? 'No websocket subprotocol returned from proxy server' : `Service chose websocket subprotocol "${printable(offered)}", not the requested one`;
        fail(new ConnectError(ConnectErrorCode.SUBPROTOCOL, `${what} (requested "${requested}")`, { cause: err }));
        return;
      }
      fail(new ConnectError(ConnectErrorCode.HANDSHAKE, `Websocket upgrade with the service failed: ${describeError(err)}`, { cause: err }));
    }
    function onAbort(): void {
      fail(signal.reason);
    }
    function fail(err: unknown): void {
      if (settled) return;
      settled = true;
      detach();
      // ws may still report the teardown; nobody else listens yet.
      ws.on('error', ignore);
      ws.terminate();
      reject(err);
    }
    function detach(): void {
      ws.off('upgrade', onUpgrade);
      ws.off('unexpected-response', onUnexpectedResponse);
      ws.off('open', onOpen);
      ws.off('error', onError);
      signal.removeEventListener('abort', onAbort);
    }
    ws.on('upgrade', onUpgrade);
    ws.on('unexpected-response', onUnexpectedResponse);
    ws.on('open', onOpen);
    ws.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function ignore(): void {}

function headerValue(value: string | string[] | undefined): string {
  return Array.isArray(value) ? value.join(',') : (value ?? '');
}

/** The first part of a refusal's body as one line; a JSON `message` is preferred. Never rejects. */
function readReason(res: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(finish, REFUSAL_BODY_TIMEOUT_MS);
    function finish(): void {
      clearTimeout(timer);
      res.off('data', onData);
      res.off('end', finish);
      res.off('error', finish);
      res.off('close', finish);
      const text = Buffer.concat(chunks).toString('utf8');
      resolve(oneLine(extractMessage(text), 300));
    }
    function onData(chunk: Buffer): void {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= REFUSAL_BODY_MAX_BYTES) finish();
    }
    res.on('data', onData);
    res.on('end', finish);
    res.on('error', finish);
    res.on('close', finish);
  });
}

function extractMessage(text: string): string {
  try {
    const json: unknown = JSON.parse(text);
    if (json && typeof json === 'object') {
      const record = json as Record<string, unknown>;
      for (const key of ['message', 'Message', 'error', 'reason']) {
        if (typeof record[key] === 'string') return record[key] as string;
      }
    }
  } catch {
    // Not JSON: the text is the reason.
  }
  return text;
}

function statusError(res: IncomingMessage, reason: string, mode: Mode): ConnectError {
  const status = res.statusCode ?? 0;
  const statusLine = `HTTP/${res.httpVersion} ${status} ${printable(res.statusMessage ?? '')}`.trim();
  const message = `Proxy server rejected web socket upgrade request: (${statusLine}) "${reason}"`;
  if (status >= 400 && status < 500) {
    const hint = refusalHint(status, reason, mode);
    return new ConnectError(ConnectErrorCode.REFUSED, message, { status, reason: reason || statusLine, hint });
  }
  return new ConnectError(ConnectErrorCode.HTTP_STATUS, message, { status, reason: reason || statusLine });
}

/** What an operator should check after the service refused the upgrade with a 4xx. */
export function refusalHint(status: number, reason: string, mode: Mode): string {
  const other = mode === 'source' ? 'destination' : 'source';
  if (/client[ -]?token/i.test(reason)) {
    if (/must be|characters|format|length/i.test(reason)) return 'the client token must be 32-128 characters of a-z, A-Z, 0-9 and - (check -i or AWSIOT_TUNNEL_CLIENT_TOKEN)';
    return 'the client token does not match the one first used with this access token: use the same -i value as before (or run on the same host), or rotate the access token';
  }
  if (/previously used|already (been )?used|in use|consumed|already connected/i.test(reason)) {
    return 'this access token was already used by another client; a token serves one client: restart with the same client token, or rotate the access token';
  }
  if (new RegExp(`\\b(mode|${other})\\b`, 'i').test(reason)) {
    return `this access token is not for ${mode} mode: use the source token with -s and the destination token with -d`;
  }
  if (/expired|closed|rotated|revoked/i.test(reason)) {
    return 'the tunnel was closed or expired, or the token was rotated: open a new tunnel or rotate the access token';
  }
  if (status === 401 || status === 403 || status === 404) {
    return "check that the region (-r) or endpoint (-e) is the tunnel's region, and that the access token is current (not rotated, not from a closed tunnel) and for this mode";
  }
  return 'the service refused the request; check the access token, the region or endpoint, and the mode';
}
