/**
 * The relay keeps V8's young generation at its initial size.
 *
 * Bulk data through the relay allocates an ArrayBuffer per TLS read (16 KiB) and per WebSocket
 * message (64 KiB), a GiB of each per GiB forwarded, while its JavaScript heap stays small
 * (~9 MB once the bundle is loaded). V8 counts that external memory against the old
 * generation's allocation limit, which after the first full GC is only ~8 MB above the live
 * heap, and starts incremental marking as soon as the space left is below the young
 * generation's capacity. Once the young generation had grown (4 → 8 → 16 MB, it grows as
 * objects survive) that was always the case: a full mark-compact every ~25 ms of bulk data,
 * 15 % of the relay's CPU in its profile, where a bare ws forwarder (bench/relay-floor.ts)
 * frees the same buffers with cheap scavenges. At its initial 2 MB the young generation is
 * collected by scavenges before the limit is reached (`--trace-gc`: ~110 mark-compacts per
 * 0.5 GiB before, 1 after).
 *
 * The price: objects that live a little longer (TLS handshakes, API calls) are promoted
 * sooner; 100 tunnels connecting at once cost the relay ~0.3 s more CPU in bench/relay.ts.
 *
 * The flag must be set before the bundle's modules have loaded (loading them is what grows
 * the young generation first), so main.ts imports this module before any other and it acts
 * on import, for `localproxy relay` only. V8 reads the growth factor whenever it would grow
 * the young generation, so setting it at run time takes effect.
 */
import { setFlagsFromString } from 'node:v8';

/** Stops V8 from growing the young generation beyond its current (initial) size. */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

// `node localproxy.cjs relay ...` and the single executable alike have the command at argv[2].
if (process.argv[2] === 'relay') keepYoungGenerationSmall();
