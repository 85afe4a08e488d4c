/**
 * The relay cannot start with the configuration it was given (a certificate that is not one,
 * a state file it cannot read or write). The message is one line naming the file and what is
 * wrong; the command line maps it to exit code 2.
 */
export class RelayConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RelayConfigError';
  }
}
