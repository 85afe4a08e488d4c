/**
 * One connection to an MQTT broker (AWS IoT Core or any MQTT 3.1.1/5 broker), kept up for the
 * life of the program: MQTT.js does the protocol, this module adds what a device service needs
 * around it — reconnects with exponential backoff and full jitter, the subscriptions renewed
 * on every connect, one-line logs, and no packet dump (MQTT.js's debug output would print
 * payloads, which carry access tokens).
 *
 * Used by `localproxy agent` (subscribe) and by the relay's notifier (publish).
 */
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { LogLevel, type Logger } from '../log';
import { Backoff } from '../transport/retry';
import { describeBrokerUrl } from './broker-flags';

/** First reconnect within 1 s, then doubling up to a minute (full jitter, so a fleet does not reconnect in step). */
export const BROKER_RETRY_BASE_MS = 1000;
export const BROKER_RETRY_MAX_MS = 60_000;
/** MQTT.js reconnects only with a positive period; full jitter may draw 0. */
const MIN_RETRY_MS = 50;
/** PINGREQ interval: a broker that vanished without a FIN is noticed within 1.5 of these. */
const KEEPALIVE_S = 30;
const CONNECT_TIMEOUT_MS = 30_000;
/** How long `close()` waits for unacknowledged QoS 1 messages before dropping the connection. */
const CLOSE_FLUSH_MS = 2000;

export interface BrokerOptions {
  /** `mqtts://host[:8883]` or `mqtt://host[:1883]`. */
  url: string;
  clientId: string;
  /** PEM client certificate (chain) and key, for brokers that authenticate with X.509 (AWS IoT Core). */
  cert?: string;
  key?: string;
  /** PEM CA certificates that replace the system store for the broker's certificate. */
  ca?: string;
  log: Logger;
}

export interface BrokerHooks {
  /** Topics (QoS 1) subscribed after every connect, since a clean session starts with none. */
  subscribe?: string[];
  /** Called after every connect, once the subscriptions were granted (at once without any). */
  onReady?: () => void;
  onMessage?: (topic: string, payload: Buffer) => void;
}

export interface BrokerLink {
  /** QoS 1; resolves once the broker acknowledged it. Queued while disconnected and sent after the reconnect. */
  publish(topic: string, payload: string): Promise<void>;
  /** Disconnects after the unacknowledged messages were sent (bounded) and stops reconnecting. */
  close(): Promise<void>;
}

function errorText(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

/** MQTT.js reports a SUBACK with a failure code (0x80 and up) as an error that carries the SUBACK. */
function isRefusal(err: Error | null | undefined): boolean {
  const granted = (err as { packet?: { granted?: unknown } } | null | undefined)?.packet?.granted;
  return Array.isArray(granted) && granted.some((code) => typeof code === 'number' && code >= 0x80);
}

export function connectBroker(options: BrokerOptions, hooks: BrokerHooks = {}): BrokerLink {
  const log = options.log;
  const where = describeBrokerUrl(options.url);
  const backoff = new Backoff(BROKER_RETRY_BASE_MS, BROKER_RETRY_MAX_MS);
  const url = new URL(options.url);
  // Host and port, not the URL: MQTT.js would parse a URL with url.parse(), which Node 24 warns about on stderr.
  const clientOptions: IClientOptions = {
    protocol: url.protocol === 'mqtts:' ? 'mqtts' : 'mqtt',
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(url.port || (url.protocol === 'mqtts:' ? 8883 : 1883)),
    clientId: options.clientId,
    protocolVersion: 4,
    clean: true,
    keepalive: KEEPALIVE_S,
    connectTimeout: CONNECT_TIMEOUT_MS,
    reconnectPeriod: BROKER_RETRY_BASE_MS,
    // Subscriptions are renewed in onConnect, once per connect, where their grant is checked.
    resubscribe: false,
    rejectUnauthorized: true,
    // Replaces MQTT.js's debug logger, whose packet dumps would include the tokens.
    log: () => {},
  };
  if (options.cert !== undefined) clientOptions.cert = options.cert;
  if (options.key !== undefined) clientOptions.key = options.key;
  if (options.ca !== undefined) clientOptions.ca = options.ca;
  let closing = false;
  let wasConnected = false;
  /** MQTT.js reports a TLS connection's socket error twice (TLS layer and stream); one line is enough. */
  let attemptError: string | undefined;
  const client: MqttClient = connect(clientOptions);

  // Before MQTT.js's own 'close' listener, which schedules the next attempt with this period.
  function onClose(): void {
    if (closing) return;
    const delay = Math.max(MIN_RETRY_MS, backoff.next());
    client.options.reconnectPeriod = delay;
    if (wasConnected) log.warn(`connection to ${where} lost; reconnecting in ${delay} ms`);
    else log.limited(LogLevel.DEBUG, 'broker retry', `next attempt to connect to ${where} in ${delay} ms`);
    wasConnected = false;
    attemptError = undefined;
  }

  function onError(err: Error): void {
    if (closing) return;
    const text = errorText(err);
    if (text === attemptError) return;
    attemptError = text;
    // Every failed attempt says why; with the backoff that is at most one line a minute in the long run.
    log.limited(LogLevel.WARNING, 'broker error', `cannot connect to ${where} as ${options.clientId}: ${text}`);
  }

  /** The backoff starts over only once the connection is useful, so a refused subscription keeps backing off. */
  function ready(): void {
    backoff.reset();
    hooks.onReady?.();
  }

  function onConnect(): void {
    wasConnected = true;
    log.info(`connected to ${where} as ${options.clientId}`);
    const topics = hooks.subscribe ?? [];
    if (topics.length === 0) {
      ready();
      return;
    }
    client.subscribe(topics, { qos: 1 }, (err) => {
      if (closing) return;
      if (isRefusal(err)) {
        // A connection that hears nothing is of no use: start over, so a fixed policy is picked up.
        log.limited(LogLevel.ERROR, 'broker subscription refused', `the broker refused the subscription to ${topics.join(', ')} (does the policy of ${options.clientId} allow it?); reconnecting`);
        wasConnected = false;
        client.stream.destroy();
        return;
      }
      if (err) {
        // The connection went away meanwhile; the reconnect subscribes again.
        log.warn(`subscribing to ${topics.join(', ')} failed: ${err.message}`);
        return;
      }
      log.info(`subscribed to ${topics.join(', ')}`);
      ready();
    });
  }

  function onMessage(topic: string, payload: Buffer): void {
    hooks.onMessage?.(topic, payload);
  }

  client.prependListener('close', onClose);
  client.on('error', onError);
  client.on('connect', onConnect);
  client.on('message', onMessage);

  return {
    publish(topic, payload) {
      return new Promise<void>((resolve, reject) => {
        client.publish(topic, payload, { qos: 1 }, (err) => (err ? reject(err) : resolve()));
      });
    },
    async close() {
      if (closing) return;
      closing = true;
      // Connected: DISCONNECT once the unacknowledged messages are acknowledged, bounded;
      // offline: drop the pending attempt at once.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          client.stream?.destroy();
          resolve();
        }, CLOSE_FLUSH_MS);
        client.end(!client.connected, {}, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      client.removeListener('close', onClose);
      client.removeListener('connect', onConnect);
      client.removeListener('message', onMessage);
      // 'error' stays handled: a late socket error after close must not become an uncaught exception.
    },
  };
}
