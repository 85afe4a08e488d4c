/**
 * A relay's two connections to Redis: one for commands, one subscribed to the events channel.
 * ioredis reconnects with our backoff, fails commands at once while Redis is away
 * (`enableOfflineQueue: false`: the API answers 503 instead of hanging) and subscribes again
 * after a reconnect. An outage is said once, and its end once. Log lines name the store as
 * `scheme://host:port/db`, never with its credentials.
 */
import { createHash } from 'node:crypto';
import Redis, { type RedisOptions } from 'ioredis';
import { LogLevel, type Logger } from '../../log';
import { StoreUnavailableError } from './directory';
import { describeStoreUrl } from './url';

const RETRY_BASE_MS = 200;
const RETRY_CAP_MS = 5000;
const COMMAND_TIMEOUT_MS = 5000;

export interface RedisLinkOptions {
  /** redis://[[user]:password@]host[:port][/db] or rediss:// (TLS). */
  url: string;
  /** When the URL has none (LOCALPROXY_RELAY_REDIS_PASSWORD). */
  password?: string;
  /** PEM CA certificate(s) for rediss:// instead of the system ones. */
  ca?: string;
  /** Names the connections in Redis's CLIENT LIST. */
  nodeId: string;
  log: Logger;
}

function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex');
}

export class RedisLink {
  readonly redis: Redis;
  /** Printable: the store's address without credentials. */
  readonly where: string;
  /** A message on the subscribed channel. */
  onMessage?: (message: string) => void;
  /** Both connections are up; `again`: after an outage, when events may have been missed. */
  onReady?: (again: boolean) => void;
  private readonly sub: Redis;
  private readonly log: Logger;
  private everReady = false;
  private down = false;
  private disposed = false;

  constructor(options: RedisLinkOptions) {
    this.log = options.log;
    this.where = describeStoreUrl(options.url);
    const url = new URL(options.url);
    const redisOptions: RedisOptions = {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectionName: `localproxy-relay-${options.nodeId}`,
      retryStrategy: (times) => {
        const delay = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** Math.min(times, 10));
        return Math.round(delay / 2 + Math.random() * (delay / 2));
      },
      ...(url.password === '' && url.username === '' && options.password ? { password: options.password } : {}),
      ...(url.protocol === 'rediss:' && options.ca ? { tls: { ca: options.ca, servername: url.hostname } } : {}),
    };
    this.redis = new Redis(options.url, redisOptions);
    this.sub = new Redis(options.url, { ...redisOptions, connectionName: `localproxy-relay-${options.nodeId}-events`, commandTimeout: undefined });
    this.watch(this.redis, 'commands');
    this.watch(this.sub, 'events');
    this.sub.on('message', (_channel: string, message: string) => this.onMessage?.(message));
  }

  /** Connects in the background (retrying with backoff) and subscribes to `channel`. */
  start(channel: string): void {
    this.log.info(`tunnel store: connecting to ${this.where}`);
    void this.redis.connect().catch(() => {});
    // Subscribed on the first connection, whenever that is; ioredis subscribes again after a reconnect.
    let subscribed = false;
    this.sub.on('ready', () => {
      if (!subscribed) this.sub.subscribe(channel).then(() => { subscribed = true; }, () => {});
    });
    void this.sub.connect().catch(() => {});
  }

  /** Both connections are up. */
  get ready(): boolean {
    return this.redis.status === 'ready' && this.sub.status === 'ready';
  }

  /** A command; a connection problem becomes StoreUnavailableError (the API answers 503). */
  async call<T>(run: (redis: Redis) => Promise<T>): Promise<T> {
    if (this.redis.status !== 'ready') throw new StoreUnavailableError(`tunnel store ${this.where} unreachable`);
    try {
      return await run(this.redis);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (/^(NOSCRIPT|ERR|WRONGTYPE)/.test(message)) throw err;
      throw new StoreUnavailableError(`tunnel store ${this.where}: ${message}`);
    }
  }

  /** Runs a script by its SHA-1, loading it if Redis does not know it (first use, or after a restart). */
  async script(lua: string, args: Array<string | number>): Promise<unknown> {
    try {
      return await this.call((redis) => redis.evalsha(sha1(lua), 0, ...args));
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith('NOSCRIPT')) throw err;
      return this.call((redis) => redis.eval(lua, 0, ...args));
    }
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    await Promise.allSettled([this.redis.quit(), this.sub.quit()]);
    this.redis.disconnect();
    this.sub.disconnect();
  }

  private watch(client: Redis, what: string): void {
    client.on('error', (err: Error) => {
      if (this.disposed) return;
      this.log.limited(LogLevel.WARNING, `store-${what}`, `tunnel store ${this.where} (${what} connection): ${err.message}; retrying with backoff`);
    });
    client.on('reconnecting', (delay: number) => {
      if (this.disposed) return;
      if (!this.down) {
        this.down = true;
        this.log.warn(`tunnel store ${this.where} unreachable: handshakes and API calls are refused (HTTP 503) until it is back; tunnels already connected go on`);
      }
      this.log.limited(LogLevel.INFO, `store-retry-${what}`, `tunnel store ${this.where}: next attempt in ${delay} ms`);
    });
    client.on('ready', () => {
      if (!this.ready) return;
      if (!this.everReady) this.log.info(`tunnel store ${this.where} connected`);
      else if (this.down) this.log.info(`tunnel store ${this.where} reachable again`);
      const again = this.everReady;
      this.everReady = true;
      this.down = false;
      this.onReady?.(again);
    });
  }
}
