/**
 * The floor under the relay's CPU per byte (bench/relay.ts --floor): the least a Node process
 * can do to carry the same bytes, run as a child like the relay (bundled, plain node) and
 * measured the same way, in the same hour. Connections are paired in the order they arrive
 * (1st with 2nd, 3rd with 4th, ...) and forwarded both ways.
 *
 *   node relay-floor.cjs tcp|tls|ws CERT.pem KEY.pem
 *
 *   tcp  plain TCP, `pipe` both ways: the kernel's share (loopback copies, syscalls).
 *   tls  two TLS sockets (the relay's certificate), `pipe` both ways: decrypt + encrypt.
 *   ws   WebSocket over TLS (ws, as the relay configures it): every message received is sent
 *        as it is to the paired peer, with the relay's backpressure (pause above 256 KiB
 *        unsent, resume below a quarter) and nothing else: no validation, no frame parsing.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { WebSocketServer, type WebSocket, type RawData } from 'ws';
import { MAX_WS_MESSAGE_BYTES } from '../src/protocol/constants';

const [kind, certFile, keyFile] = process.argv.slice(2);
const cert = readFileSync(certFile, 'utf8');
const key = readFileSync(keyFile, 'utf8');
const HIGH_WATER = 256 * 1024;

/** Joins connections two at a time, in the order they arrive; the first waits paused. */
function inPairs<T extends { pause(): unknown; resume(): unknown }>(join: (first: T, second: T) => void): (conn: T) => void {
  let waiting: T | undefined;
  return (conn) => {
    if (!waiting) {
      waiting = conn;
      conn.pause();
      return;
    }
    const first = waiting;
    waiting = undefined;
    join(first, conn);
    first.resume();
  };
}

function pairStreams(server: net.Server, event: string): void {
  const pair = inPairs<net.Socket>((first, second) => first.pipe(second).pipe(first));
  server.on(event, (socket: net.Socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => socket.destroy());
    pair(socket);
  });
}

function forwardWs(from: WebSocket, to: WebSocket): void {
  let unsent = 0;
  from.on('message', (data: RawData) => {
    const chunk = data as Buffer;
    unsent += chunk.length;
    to.send(chunk, { binary: true }, () => {
      unsent -= chunk.length;
      if (unsent < HIGH_WATER / 4 && from.isPaused) from.resume();
    });
    if (unsent > HIGH_WATER && !from.isPaused) from.pause();
  });
}

let server: net.Server;
if (kind === 'tcp') {
  server = net.createServer();
  pairStreams(server, 'connection');
} else if (kind === 'tls') {
  server = tls.createServer({ cert, key, minVersion: 'TLSv1.2' });
  pairStreams(server, 'secureConnection');
} else if (kind === 'ws') {
  const https = createHttpsServer({ cert, key, minVersion: 'TLSv1.2' });
  const wss = new WebSocketServer({ server: https, maxPayload: MAX_WS_MESSAGE_BYTES, perMessageDeflate: false, autoPong: false, clientTracking: false });
  const pair = inPairs<WebSocket>((first, second) => {
    forwardWs(first, second);
    forwardWs(second, first);
  });
  wss.on('connection', (ws, req) => {
    req.socket.setNoDelay(true);
    ws.on('error', () => ws.terminate());
    pair(ws);
  });
  server = https;
} else {
  throw new Error(`relay-floor: unknown kind ${kind}`);
}
server.listen(0, '127.0.0.1', () => {
  console.log(`floor listening on ${(server.address() as net.AddressInfo).port}`);
});
process.on('SIGTERM', () => process.exit(0));
