/** Base class for every error thrown by @fleet/pki. Messages never contain secrets. */
export class PkiError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The controller did not present the CA certificate the bootstrap token pins,
 * or its leaf certificate is not signed by that CA.
 */
export class FingerprintMismatchError extends PkiError {}
