/**
 * A raw WebSocket peer for relay tests: the real `ws` client plus our codec, with a queue
 * of decoded messages to await one by one.
 */
import { once } from 'node:events';
import WebSocket from 'ws';
import { SUBPROTOCOL_V3 } from '../../src/protocol/constants';
import { encodeFrame, FrameDecoder } from '../../src/protocol/framing';
import type { Message, MessageInit } from '../../src/protocol/message';
import type { Relay } from '../../src/relay/server';
import { within } from '../helpers/wait';

export interface PeerOptions {
  mode?: 'source' | 'destination';
  protocols?: string[];
  headers?: Record<string, string>;
  clientToken?: string;
  /** Source address of the connection (any 127.x.y.z on Linux). */
  localAddress?: string;
  /** ws answers pings by itself (default true); false: the test answers them (`pings`). */
  autoPong?: boolean;
}

export class TestPeer {
  readonly ws: WebSocket;
  readonly messages: Message[] = [];
  closeCode?: number;
  closeReason = '';
  readonly closed: Promise<void>;
  bytesReceived = 0;
  /** Payloads of the pings and pongs received, in order. */
  readonly pings: Buffer[] = [];
  readonly pongs: Buffer[] = [];
  /** The upgrade response's headers. */
  responseHeaders: Record<string, string | string[] | undefined> = {};
  private readonly decoder = new FrameDecoder();
  private waiters: Array<() => void> = [];

  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('upgrade', (res) => { this.responseHeaders = res.headers; });
    ws.on('ping', (data: Buffer) => {
      this.pings.push(data);
      this.wake();
    });
    ws.on('pong', (data: Buffer) => {
      this.pongs.push(data);
      this.wake();
    });
    ws.on('message', (data: Buffer) => {
      this.bytesReceived += data.length;
      this.decoder.push(data, (msg) => this.messages.push(msg), (err) => { throw err; });
      this.wake();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code: number, reason: Buffer) => {
      this.closeCode = code;
      this.closeReason = reason.toString();
      this.wake();
      resolve();
    }));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** The next decoded message (bounded wait). */
  async next(ms = 5000): Promise<Message> {
    const deadline = Date.now() + ms;
    while (this.messages.length === 0) {
      if (this.closeCode !== undefined) throw new Error(`peer closed (${this.closeCode} ${this.closeReason}) while waiting for a message`);
      await within(new Promise<void>((resolve) => this.waiters.push(resolve)), Math.max(1, deadline - Date.now()), 'next message');
    }
    return this.messages.shift()!;
  }

  /** Waits until `check` holds, re-checked after every received message. */
  async until(check: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (this.closeCode !== undefined) throw new Error(`peer closed (${this.closeCode} ${this.closeReason}) while waiting for ${what}`);
      await within(new Promise<void>((resolve) => this.waiters.push(resolve)), Math.max(1, deadline - Date.now()), what);
    }
  }

  send(...msgs: MessageInit[]): void {
    this.ws.send(Buffer.concat(msgs.map((m) => encodeFrame(m))));
  }

  async waitClosed(ms = 5000): Promise<{ code: number; reason: string }> {
    await within(this.closed, ms, 'close');
    return { code: this.closeCode!, reason: this.closeReason };
  }

  terminate(): void {
    this.ws.terminate();
  }
}

export function tunnelUrl(relay: Relay, mode: 'source' | 'destination'): string {
  return `${relay.url}/tunnel?local-proxy-mode=${mode}`;
}

/** Connects; resolves once open, rejects with `HTTP <status>: <body>` on a refusal. */
export async function connectPeer(relay: Relay, token: string | undefined, options: PeerOptions = {}): Promise<TestPeer> {
  const headers: Record<string, string> = { ...options.headers };
  if (token !== undefined) headers['access-token'] = token;
  if (options.clientToken) headers['client-token'] = options.clientToken;
  const ws = new WebSocket(tunnelUrl(relay, options.mode ?? 'source'), options.protocols ?? [SUBPROTOCOL_V3], { headers, ca: relay.caPem, perMessageDeflate: false, localAddress: options.localAddress, autoPong: options.autoPong ?? true });
  const peer = new TestPeer(ws);
  const refused = new Promise<never>((_, reject) => {
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d: Buffer) => { body += d; });
      res.on('end', () => reject(new Error(`HTTP ${res.statusCode}: ${body.trim()}`)));
    });
    ws.on('error', reject);
  });
  await within(Promise.race([once(ws, 'open'), refused]), 5000, 'WebSocket open');
  return peer;
}

/** Connects and consumes the SERVICE_IDS the relay sends first (2.0/3.0). */
export async function connectReady(relay: Relay, token: string, options: PeerOptions = {}): Promise<TestPeer> {
  const peer = await connectPeer(relay, token, options);
  const first = await peer.next();
  if (first.type !== 5) throw new Error(`expected SERVICE_IDS first, got type ${first.type}`);
  return peer;
}
