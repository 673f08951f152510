#!/usr/bin/env node
// Prints 1 when liburing's header and static library are installed (Debian: liburing-dev), else 0.
// binding.gyp links it statically then, so the addon needs no liburing at run time; without it the
// TAP ports keep their read()/write() loops (src/linux/tap_uring.h).
import { existsSync } from 'node:fs';

const header = ['/usr/include/liburing.h', '/usr/local/include/liburing.h'].some((p) => existsSync(p));
const lib = ['/usr/lib/x86_64-linux-gnu/liburing.a', '/usr/lib/aarch64-linux-gnu/liburing.a', '/usr/lib/liburing.a', '/usr/local/lib/liburing.a'].some((p) => existsSync(p));
process.stdout.write(process.platform === 'linux' && header && lib ? '1' : '0');
