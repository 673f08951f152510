/*
 * fleet-rawsend: send complete, caller-chosen Ethernet frames from a Fleet guest.
 *
 * For the security end-to-end tests: a guest forges DHCP client messages (giaddr, option 82,
 * client id, RELEASE of another address), ARP floods, IPv6, ... and the tests check what the
 * worker's packet filter lets through. Root in a guest can always send raw frames with its own
 * kernel; this tool only saves the tests from shipping a compiler or a scripting language.
 *
 * Built by guest-image/build.sh: gcc -static -Os -s, installed as /usr/bin/fleet-rawsend.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MIN_FRAME 14   /* dst MAC + src MAC + EtherType */
#define MAX_FRAME 1514 /* 1500-byte MTU + Ethernet header; no FCS */

static const char *prog = "fleet-rawsend";

static void usage(FILE *f) {
  fprintf(f,
    "usage: %s [-i IFACE] [-n COUNT] [-d DELAY_US] [-c] [HEXFRAME...]\n"
    "\n"
    "Send complete Ethernet frames (dst MAC, src MAC, EtherType, payload; no FCS) exactly as\n"
    "given, through an AF_PACKET/SOCK_RAW socket bound to IFACE. Needs root (CAP_NET_RAW).\n"
    "\n"
    "  HEXFRAME     one frame in hex, 14..1514 bytes; ':' and whitespace between digits are\n"
    "               ignored. Without HEXFRAME arguments, one frame per line is read from stdin\n"
    "               (empty lines and lines starting with '#' are skipped).\n"
    "  -i IFACE     interface to send on (default eth0)\n"
    "  -n COUNT     send each frame COUNT times in a row (default 1)\n"
    "  -d DELAY_US  wait DELAY_US microseconds between two sends (default 0)\n"
    "  -c           fill in checksums: for IPv4 frames (EtherType 0x0800, also behind one\n"
    "               802.1Q tag) the IPv4 header checksum, and for unfragmented IPv4/UDP the UDP\n"
    "               checksum over the pseudo-header and the UDP length field's bytes (0 is\n"
    "               sent as 0xffff). Other frames are sent unchanged.\n"
    "  -h           this help\n"
    "\n"
    "All frames are checked before the first is sent. On success prints 'sent N frames' (N =\n"
    "frames x COUNT). Exit status: 0 ok, 1 socket or send error, 2 bad usage or input.\n",
    prog);
}

struct frame {
  size_t len;
  unsigned char data[MAX_FRAME];
};

static struct frame *frames;
static size_t nframes, capframes;

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Parse one hex frame and append it to frames[]. what names it in error messages. */
static int add_frame(const char *hex, const char *what) {
  if (nframes == capframes) {
    size_t cap = capframes ? capframes * 2 : 16;
    struct frame *p = realloc(frames, cap * sizeof *p);
    if (!p) { fprintf(stderr, "%s: out of memory\n", prog); return -1; }
    frames = p;
    capframes = cap;
  }
  struct frame *f = &frames[nframes];
  size_t len = 0;
  int hi = -1; /* first digit of a byte not yet complete */
  for (const char *s = hex; *s; s++) {
    int c = (unsigned char)*s;
    if (c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      if (hi >= 0) {
        fprintf(stderr, "%s: %s: odd number of hex digits before '%s'\n", prog, what, c == ':' ? ":" : "whitespace");
        return -1;
      }
      continue;
    }
    int v = hexval(c);
    if (v < 0) {
      if (c > ' ' && c < 0x7f)
        fprintf(stderr, "%s: %s: bad hex character '%c' at offset %zu\n", prog, what, c, (size_t)(s - hex));
      else
        fprintf(stderr, "%s: %s: bad byte 0x%02x at offset %zu\n", prog, what, c, (size_t)(s - hex));
      return -1;
    }
    if (hi < 0) { hi = v; continue; }
    if (len == MAX_FRAME) {
      fprintf(stderr, "%s: %s: frame longer than %d bytes\n", prog, what, MAX_FRAME);
      return -1;
    }
    f->data[len++] = (unsigned char)(hi << 4 | v);
    hi = -1;
  }
  if (hi >= 0) { fprintf(stderr, "%s: %s: odd number of hex digits\n", prog, what); return -1; }
  if (len < MIN_FRAME) {
    fprintf(stderr, "%s: %s: frame is %zu bytes, shorter than an Ethernet header (%d)\n", prog, what, len, MIN_FRAME);
    return -1;
  }
  f->len = len;
  nframes++;
  return 0;
}

/* One's-complement sum of 16-bit big-endian words; an odd last byte is padded with zero. */
static uint32_t sum16(const unsigned char *p, size_t n, uint32_t sum) {
  for (; n > 1; p += 2, n -= 2) sum += (uint32_t)p[0] << 8 | p[1];
  if (n) sum += (uint32_t)p[0] << 8;
  return sum;
}

static uint16_t fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static void put16(unsigned char *p, uint16_t v) { p[0] = v >> 8; p[1] = v & 0xff; }
static unsigned get16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

/* -c: fill in the IPv4 header checksum and the UDP checksum. */
static int fix_checksums(struct frame *f, const char *what) {
  unsigned char *d = f->data;
  size_t off = 12; /* EtherType */
  if (get16(d + off) == 0x8100 && f->len >= 18) off += 4; /* one 802.1Q tag */
  if (get16(d + off) != 0x0800) return 0;
  unsigned char *ip = d + off + 2;
  size_t room = f->len - (size_t)(ip - d);
  if (room < 20 || ip[0] >> 4 != 4 || (ip[0] & 0x0f) < 5 || (size_t)(ip[0] & 0x0f) * 4 > room) {
    fprintf(stderr, "%s: %s: -c: not a complete IPv4 header\n", prog, what);
    return -1;
  }
  size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
  put16(ip + 10, 0);
  put16(ip + 10, fold(sum16(ip, ihl, 0)));

  int fragment = (get16(ip + 6) & 0x3fff) != 0; /* MF set or offset != 0 */
  if (ip[9] != 17 || fragment) return 0;
  unsigned char *udp = ip + ihl;
  size_t avail = room - ihl;
  if (avail < 8) { fprintf(stderr, "%s: %s: -c: UDP header cut off\n", prog, what); return -1; }
  size_t ulen = get16(udp + 4);
  if (ulen < 8 || ulen > avail) {
    fprintf(stderr, "%s: %s: -c: UDP length field %zu does not fit the frame (%zu bytes from the UDP header on)\n",
            prog, what, ulen, avail);
    return -1;
  }
  put16(udp + 6, 0);
  uint32_t sum = sum16(ip + 12, 8, 0); /* source and destination address */
  sum += 17 + (uint32_t)ulen;           /* zero, protocol, UDP length */
  uint16_t c = fold(sum16(udp, ulen, sum));
  put16(udp + 6, c ? c : 0xffff);
  return 0;
}

static int parse_num(const char *s, unsigned long max, unsigned long *out, const char *opt) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (*s < '0' || *s > '9' || *end || errno || v > max) {
    fprintf(stderr, "%s: %s: not a number from 0 to %lu: '%s'\n", prog, opt, max, s);
    return -1;
  }
  *out = v;
  return 0;
}

int main(int argc, char **argv) {
  const char *iface = "eth0";
  unsigned long count = 1, delay_us = 0;
  int checksums = 0, opt;

  while ((opt = getopt(argc, argv, "+i:n:d:ch")) != -1) {
    switch (opt) {
    case 'i': iface = optarg; break;
    case 'n':
      if (parse_num(optarg, 100000000UL, &count, "-n")) return 2;
      if (count == 0) { fprintf(stderr, "%s: -n: COUNT must be at least 1\n", prog); return 2; }
      break;
    case 'd': if (parse_num(optarg, 60000000UL, &delay_us, "-d")) return 2; break;
    case 'c': checksums = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }

  char what[64];
  if (optind < argc) {
    for (int i = optind; i < argc; i++) {
      snprintf(what, sizeof what, "frame %zu (argument)", nframes + 1);
      if (add_frame(argv[i], what)) return 2;
    }
  } else {
    char *line = NULL;
    size_t cap = 0;
    unsigned long lineno = 0;
    while (getline(&line, &cap, stdin) != -1) {
      lineno++;
      const char *s = line + strspn(line, " \t\r\n");
      if (!*s || *s == '#') continue;
      snprintf(what, sizeof what, "stdin line %lu", lineno);
      if (add_frame(s, what)) return 2;
    }
    if (ferror(stdin)) { fprintf(stderr, "%s: reading stdin: %s\n", prog, strerror(errno)); return 1; }
    free(line);
  }
  if (nframes == 0) { fprintf(stderr, "%s: no frames given\n", prog); usage(stderr); return 2; }
  if (checksums) {
    for (size_t i = 0; i < nframes; i++) {
      snprintf(what, sizeof what, "frame %zu", i + 1);
      if (fix_checksums(&frames[i], what)) return 2;
    }
  }

  unsigned ifindex = if_nametoindex(iface);
  if (ifindex == 0) { fprintf(stderr, "%s: interface %s: %s\n", prog, iface, strerror(errno)); return 1; }
  /* Protocol 0: this socket sends only, it never receives a copy of any traffic. */
  int fd = socket(AF_PACKET, SOCK_RAW, 0);
  if (fd < 0) { fprintf(stderr, "%s: socket(AF_PACKET, SOCK_RAW): %s\n", prog, strerror(errno)); return 1; }
  struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = (int)ifindex };
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
    fprintf(stderr, "%s: bind to %s: %s\n", prog, iface, strerror(errno));
    return 1;
  }

  struct timespec delay = { .tv_sec = (time_t)(delay_us / 1000000), .tv_nsec = (long)(delay_us % 1000000) * 1000 };
  unsigned long long sent = 0;
  for (size_t i = 0; i < nframes; i++) {
    for (unsigned long k = 0; k < count; k++) {
      if (sent > 0 && delay_us > 0) {
        struct timespec left = delay;
        while (nanosleep(&left, &left) < 0 && errno == EINTR) {}
      }
      ssize_t n = send(fd, frames[i].data, frames[i].len, 0);
      if (n < 0 || (size_t)n != frames[i].len) {
        fprintf(stderr, "%s: sending frame %zu (%zu bytes) on %s: %s (sent %llu frames before)\n", prog, i + 1,
                frames[i].len, iface, n < 0 ? strerror(errno) : "short write", sent);
        return 1;
      }
      sent++;
    }
  }
  close(fd);
  printf("sent %llu frames\n", sent);
  return 0;
}
