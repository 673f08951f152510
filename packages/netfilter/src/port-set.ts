/** A set of 16-bit ports as a 8 KiB bitmap: membership is one load and a mask. */
export class PortSet {
  readonly #bits = new Uint32Array(2048);
  #size = 0;

  add(port: number): void {
    const w = port >>> 5;
    const m = 1 << (port & 31);
    if ((this.#bits[w]! & m) === 0) {
      this.#bits[w] = this.#bits[w]! | m;
      this.#size++;
    }
  }

  has(port: number): boolean {
    return (this.#bits[(port >>> 5) & 2047]! & (1 << (port & 31))) !== 0;
  }

  get size(): number {
    return this.#size;
  }
}
