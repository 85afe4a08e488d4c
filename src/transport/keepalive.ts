/**
 * Keepalive: a ping right away and then every period,
 * carrying the epoch milliseconds in decimal. Any pong counts as an answer (the
 * reference died on a non-numeric one), and so does any other frame from the service: it
 * proves the service is there. After `maxMissed` unanswered pings the peer is treated as
 * dead and `onDead` runs once. `maxMissed` 0 never declares it dead.
 *
 * Flow control must not look like death. Two states say nothing about the service:
 * - our reader is paused (local applications read slowly): its pong sits unread in the socket;
 * - our ping is not written yet: it waits behind data the service is not reading, because
 *   the far side is slow and the service holds back (the relay pauses reading a sender
 *   whose receiver lags). The service cannot answer a ping it has not received.
 * Neither counts as a miss, and no second ping is queued behind the first. A peer that dies
 * while our writes are blocked is reported by TCP itself (retransmission timeout).
 * A service that holds us back after our last writes fitted in the socket buffers has our
 * ping but does not read it; it must show it is alive by other frames (our relay sends unsolicited pongs).
 *
 * The pacer's delay probes (src/flow/probes.ts) ping too, while data flows: their pings carry
 * `q` and a probe id, so the two never mistake each other's pongs; any pong still proves the
 * service is alive.
 */
import type WebSocket from 'ws';
import { probeId } from '../flow/probes';
import type { Logger } from '../log';

export interface KeepaliveOptions {
  periodMs: number;
  maxMissed: number;
  log: Logger;
  onDead: () => void;
  /** True while the owner has paused reading the WebSocket. Default: `ws.isPaused`. */
  readerPaused?: () => boolean;
}

/**
 * Pongs one at a time: a ping read while the last pong is still being written is answered,
 * once that write completes, by one pong for the most recent ping (RFC 6455 5.5.3 allows
 * that), so a peer that pings but does not read us costs one pending pong, however long it
 * does not read. `allowed` is asked before each pong (a relay peer that stopped answering).
 */
export class PongSender {
  private inFlight = false;
  private latest?: Buffer;

  constructor(private readonly ws: WebSocket, private readonly allowed: () => boolean = () => true) {}

  answer(data: Buffer): void {
    if (this.ws.readyState !== this.ws.OPEN || !this.allowed()) return;
    if (this.inFlight) this.latest = data;
    else this.send(data);
  }

  private send(data: Buffer): void {
    this.latest = undefined;
    this.inFlight = true;
    this.ws.pong(data, undefined, this.onWritten);
  }

  private readonly onWritten = (err?: Error): void => {
    this.inFlight = false;
    const next = this.latest;
    this.latest = undefined;
    if (!err && next && this.ws.readyState === this.ws.OPEN && this.allowed()) this.send(next);
  };
}

/**
 * Answers the service's pings, one pong at a time (PongSender). The connection must be created
 * with `autoPong: false`.
 *
 * ws's automatic pongs are not used: each waits in our socket while the service does not read
 * us, and ws terminates the connection, silently, once 60 are waiting (`maxPendingAutoPongs`).
 * A service holding us back (flow control: its other side lags) while pinging us to show it is
 * alive then cut a healthy tunnel after 30 s. Here a paused tunnel costs one pending pong,
 * however long the pause.
 */
export function answerPings(ws: WebSocket): void {
  const pongs = new PongSender(ws);
  ws.on('ping', (data: Buffer) => pongs.answer(data));
}

/** Starts pinging; returns stop(). Stops by itself when the socket closes. */
export function startKeepalive(ws: WebSocket, options: KeepaliveOptions): () => void {
  const { periodMs, maxMissed, log, onDead } = options;
  const readerPaused = options.readerPaused ?? (() => ws.isPaused);
  let unanswered = 0;
  /** A ping has been sent since the session began (the first tick sends one). */
  let pingOutstanding = false;
  /** The last ping has been handed to ws but its write has not completed. */
  let pingInFlight = false;
  /** Something arrived from the service since the last ping was sent. */
  let heardSincePing = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  function onActivity(): void {
    heardSincePing = true;
    unanswered = 0;
  }
  function onPong(data: Buffer): void {
    onActivity();
    if (probeId(data) !== undefined) return;   // the delay probe's: timed by the pacer
    const text = data.toString('latin1');
    if (/^\d{1,16}$/.test(text)) log.debug(`Pong reply latency: ${Date.now() - Number(text)} ms`);
    else log.trace(`Pong received with a non-numeric payload (${data.length} bytes)`);
  }
  function onPingWritten(err?: Error): void {
    pingInFlight = false;
    if (err && !stopped) log.error(`Failed to send websocket ping: ${err.message}`);
  }
  function tick(): void {
    if (stopped) return;
    // A socket already closing is not "dead": its close event ends the session instead.
    if (ws.readyState !== ws.OPEN) {
      stop();
      return;
    }
    if (pingOutstanding && !heardSincePing && !pingInFlight && !readerPaused()) unanswered++;
    if (maxMissed > 0 && unanswered >= maxMissed) {
      log.error(`No pong for ${unanswered} pings sent ${periodMs} ms apart: the service connection is dead`);
      stop();
      onDead();
      return;
    }
    if (!pingInFlight) {
      const payload = String(Date.now());
      pingOutstanding = true;
      pingInFlight = true;
      heardSincePing = false;
      ws.ping(payload, undefined, onPingWritten);
      log.trace(`Sent ping data: ${payload}`);
    }
    timer = setTimeout(tick, periodMs);
  }
  function onClose(): void {
    stop();
  }
  function stop(): void {
    if (stopped) return;
    stopped = true;
    clearTimeout(timer);
    ws.off('pong', onPong);
    ws.off('ping', onActivity);
    ws.off('message', onActivity);
    ws.off('close', onClose);
  }

  ws.on('pong', onPong);
  ws.on('ping', onActivity);
  ws.on('message', onActivity);
  ws.on('close', onClose);
  log.debug(`Setting up web socket pings for every ${periodMs} milliseconds`);
  tick();
  return stop;
}
