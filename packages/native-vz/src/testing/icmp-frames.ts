// Frames the native tests send through a TAP or an AF_PACKET socket and expect the kernel to answer.

/** The Internet checksum of b[start, end). */
export function csum(b: Buffer, start: number, end: number): number {
  let s = 0;
  for (let i = start; i < end; i += 2) s += (b[i]! << 8) | (i + 1 < end ? b[i + 1]! : 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

export interface EchoAddresses {
  srcMac: Buffer;
  dstMac: Buffer;
  srcIp: number[];
  dstIp: number[];
}

/** Ethernet + IPv4 + ICMP echo request (56-byte payload), checksums filled in. */
export function echoRequest(a: EchoAddresses, id: number, seq: number): Buffer {
  const payload = 56;
  const f = Buffer.alloc(14 + 20 + 8 + payload);
  a.dstMac.copy(f, 0);
  a.srcMac.copy(f, 6);
  f.writeUInt16BE(0x0800, 12);
  f[14] = 0x45;
  f.writeUInt16BE(20 + 8 + payload, 16);
  f.writeUInt16BE(seq, 18);
  f[22] = 64;
  f[23] = 1; // ICMP
  Buffer.from(a.srcIp).copy(f, 26);
  Buffer.from(a.dstIp).copy(f, 30);
  f.writeUInt16BE(csum(f, 14, 34), 24);
  f[34] = 8; // echo request
  f.writeUInt16BE(id, 38);
  f.writeUInt16BE(seq, 40);
  for (let i = 0; i < payload; i++) f[42 + i] = i;
  f.writeUInt16BE(csum(f, 34, f.length), 36);
  return f;
}
