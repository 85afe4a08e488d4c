/**
 * A relay on a shared store (`--store`): the tunnels in Redis and this relay's node of the
 * cluster on them. The server loads this module only then, so the Redis client is not loaded
 * by the proxy or by a single relay.
 */
import { randomUUID } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import type { Logger } from '../../log';
import { systemClock, type Clock } from '../clock';
import { RelayConfigError } from '../errors';
import type { RelayLimits } from '../limits';
import type { DirectoryEvents, TunnelDirectory } from '../store/directory';
import { RedisDirectory } from '../store/redis';
import { ClusterNode, DEFAULT_LEASE_MS, type ClusterHost, type ClusterOptions } from './node';

export interface SharedStoreOptions {
  store: { url: string; password?: string; ca?: string };
  cluster?: ClusterOptions & { nodeId?: string };
  log: Logger;
  clock?: Clock;
  limits: RelayLimits;
  region?: string;
  accountId?: string;
}

export interface SharedStore {
  directory: TunnelDirectory;
  nodeId: string;
  /**
   * Starts this relay's node on the store, once the relay can serve it: `events` are the
   * server's handlers; `certPem`, the certificate it serves, is trusted when dialing other nodes
   * unless the cluster names its own CA.
   */
  startNode(host: ClusterHost, events: DirectoryEvents, certPem?: string): ClusterNode;
}

export function sharedStore(options: SharedStoreOptions): SharedStore {
  const { store, cluster, log } = options;
  if (!cluster) throw new RelayConfigError('a relay with a shared store is a node of a cluster: it needs --node-url and the cluster secret');
  const nodeId = cluster.nodeId ?? `node-${randomUUID().slice(0, 8)}`;
  let events: DirectoryEvents | undefined;
  const directory = new RedisDirectory({
    url: store.url,
    password: store.password,
    ca: store.ca,
    log,
    clock: options.clock ?? systemClock,
    limits: options.limits,
    region: options.region,
    accountId: options.accountId,
    // The server's handlers, once it exists (no event arrives before start()).
    events: {
      onClosed: (tunnelId, reason) => events?.onClosed(tunnelId, reason),
      onTokenRevoked: (tunnelId, mode, hash) => events?.onTokenRevoked(tunnelId, mode, hash),
    },
    nodeId,
    nodeUrl: cluster.nodeUrl,
    leaseMs: cluster.leaseMs ?? DEFAULT_LEASE_MS,
  });
  return {
    directory,
    nodeId,
    startNode(host, serverEvents, certPem) {
      events = serverEvents;
      const node = new ClusterNode(directory, host, { ...cluster, ca: cluster.ca ?? (certPem ? [...rootCertificates, certPem] : undefined) });
      log.info(`cluster node ${nodeId}, reached by other nodes at ${cluster.nodeUrl}`);
      directory.start();
      return node;
    },
  };
}
