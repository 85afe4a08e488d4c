/**
 * Raw tunnel peers for the relay benchmarks (bench/relay.ts, bench/relay-cluster.ts): a
 * WebSocket client with our codec and no proxy behind it, so the figures are the relay's.
 */
import WebSocket from 'ws';
import { socketOf } from '../src/flow/writer';
import { SUBPROTOCOL_V3 } from '../src/protocol/constants';
import { encodeFrame, FrameDecoder } from '../src/protocol/framing';
import { MessageType } from '../src/protocol/message';

const MiB = 1024 * 1024;
/** DATA payload of every message pumped: the largest the protocol allows. */
export const PAYLOAD = 64512;
/** A pump never has more than this buffered locally. */
const SEND_WINDOW = 8 * MiB;

export interface RawPeer {
  ws: WebSocket;
  /** DATA payload bytes received, and DATA messages. */
  received: number;
  messages: number;
  /** Called for every DATA message received. */
  onData?: (payload: Uint8Array) => void;
}

/**
 * How a peer masks what it sends: `random` keys as the C++ proxy and browsers (the receiver
 * unmasks every byte), or the all-zero key our proxies use (ws then skips unmasking).
 */
export type MaskKeys = 'random' | 'zero';

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

export function connectPeer(url: string, mode: 'source' | 'destination', token: string, ca: string, mask: MaskKeys = 'random'): Promise<RawPeer> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/tunnel?local-proxy-mode=${mode}`, [SUBPROTOCOL_V3], { headers: { 'access-token': token }, ca, perMessageDeflate: false, ...(mask === 'zero' ? { generateMask: zeroMask } : {}) });
    const peer: RawPeer = { ws, received: 0, messages: 0 };
    const decoder = new FrameDecoder();
    ws.on('message', (data: Buffer) => decoder.push(data, (msg) => {
      if (msg.type !== MessageType.DATA) return;
      peer.received += msg.payload.length;
      peer.messages++;
      peer.onData?.(msg.payload);
    }, (err) => { throw err; }));
    ws.once('open', () => {
      socketOf(ws)!.setNoDelay(true);
      resolve(peer);
    });
    ws.once('error', reject);
  });
}

/**
 * Sends `bytes` of DATA for `service` from `src`, never more than SEND_WINDOW buffered locally.
 * `fragmentBytes`: each message goes as WebSocket fragments of that size, as Boost.Beast (the
 * C++ proxy) sends a masked message (4 KiB pieces, its write buffer).
 */
export function pump(src: RawPeer, service: string, bytes: number, fragmentBytes = 0): Promise<void> {
  const frame = encodeFrame({ type: MessageType.DATA, streamId: 1, serviceId: service, connectionId: 1, payload: Buffer.alloc(PAYLOAD, 0x5a) });
  const pieces: Buffer[] = [];
  for (let at = 0; fragmentBytes > 0 && at < frame.length; at += fragmentBytes) pieces.push(frame.subarray(at, at + fragmentBytes));
  let sent = 0;
  return new Promise((resolve) => {
    const step = () => {
      while (sent < bytes && src.ws.bufferedAmount < SEND_WINDOW) {
        if (pieces.length === 0) src.ws.send(frame);
        else pieces.forEach((piece, i) => src.ws.send(piece, { binary: true, fin: i === pieces.length - 1 }));
        sent += PAYLOAD;
      }
      if (sent < bytes) setTimeout(step, 1);
      else resolve();
    };
    step();
  });
}

/** Resolves once `peer` has received `bytes` of DATA payload (it takes over `onData`). */
export function waitReceived(peer: RawPeer, bytes: number): Promise<void> {
  return new Promise((resolve) => {
    const check = () => { if (peer.received >= bytes) resolve(); };
    peer.onData = check;
    check();
  });
}
