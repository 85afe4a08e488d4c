/** `localproxy relay [options]`: runs the relay until SIGINT/SIGTERM. */
export async function runRelayCli(_argv: string[]): Promise<number> {
  process.stderr.write('localproxy relay: not implemented yet\n');
  return 1;
}
