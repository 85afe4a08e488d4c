// Types for scripts/macho-sign.mjs, so TypeScript tests can call the signer.
export class MachOError extends Error {
  code: 'ERR_MACHO';
}
export function loadCommands(buf: Buffer): { cmd: number; offset: number; size: number }[];
export function readSegment(buf: Buffer, offset: number): { name: string; vmaddr: number; vmsize: number; fileoff: number; filesize: number; nsects: number };
export function adhocSign(input: Buffer, options: { identifier: string }): Buffer;
