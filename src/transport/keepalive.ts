/**
 * Keepalive (behaviour spec 3.8, Decisions 8): a ping right away and then every period,
 * carrying the epoch milliseconds in decimal. Any pong counts as an answer (the
 * reference died on a non-numeric one); after `maxMissed` pings without an answer the
 * peer is treated as dead and `onDead` runs once. `maxMissed` 0 never declares it dead.
 */
import type WebSocket from 'ws';
import type { Logger } from '../log';

export interface KeepaliveOptions {
  periodMs: number;
  maxMissed: number;
  log: Logger;
  onDead: () => void;
}

/** Starts pinging; returns stop(). Stops by itself when the socket closes. */
export function startKeepalive(ws: WebSocket, options: KeepaliveOptions): () => void {
  const { periodMs, maxMissed, log, onDead } = options;
  let unanswered = 0;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  function onPong(data: Buffer): void {
    unanswered = 0;
    const text = data.toString('latin1');
    if (/^\d{1,16}$/.test(text)) log.debug(`Pong reply latency: ${Date.now() - Number(text)} ms`);
    else log.trace(`Pong received with a non-numeric payload (${data.length} bytes)`);
  }
  function onPingSent(err?: Error): void {
    if (err && !stopped) log.error(`Failed to send websocket ping: ${err.message}`);
  }
  function tick(): void {
    if (stopped) return;
    // A socket already closing is not "dead": its close event ends the session instead.
    if (ws.readyState !== ws.OPEN) {
      stop();
      return;
    }
    if (maxMissed > 0 && unanswered >= maxMissed) {
      log.error(`No pong for ${unanswered} pings sent ${periodMs} ms apart: the service connection is dead`);
      stop();
      onDead();
      return;
    }
    const payload = String(Date.now());
    ws.ping(payload, undefined, onPingSent);
    unanswered++;
    log.trace(`Sent ping data: ${payload}`);
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
    ws.off('close', onClose);
  }

  ws.on('pong', onPong);
  ws.on('close', onClose);
  log.debug(`Setting up web socket pings for every ${periodMs} milliseconds`);
  tick();
  return stop;
}
