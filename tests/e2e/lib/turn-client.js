// A small TURN client (RFC 8656 long-term credentials) over UDP or TCP, for tests that
// must see the exact error code a request gets (403, 486, 401, 438...). Written from the
// RFCs; turnutils_uclient (coturn) is the independent client for bulk relaying.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';

const MAGIC = 0x2112a442;
export const METHOD = { BINDING: 0x001, ALLOCATE: 0x003, REFRESH: 0x004, SEND: 0x006, DATA: 0x007, CREATE_PERMISSION: 0x008, CHANNEL_BIND: 0x009 };
export const ATTR = {
  USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, CHANNEL_NUMBER: 0x000c, LIFETIME: 0x000d,
  XOR_PEER_ADDRESS: 0x0012, DATA: 0x0013, REALM: 0x0014, NONCE: 0x0015, XOR_RELAYED_ADDRESS: 0x0016,
  REQUESTED_TRANSPORT: 0x0019, XOR_MAPPED_ADDRESS: 0x0020,
};

/** TURN REST credentials (coturn's use-auth-secret). */
export function restCredential(secret, identity, expiryUnix) {
  const username = `${expiryUnix}:${identity}`;
  return { username, password: createHmac('sha1', secret).update(username).digest('base64') };
}

/** One STUN attribute: type, length, value padded to 4 bytes (RFC 8489 §14). */
export function attr(type, value) {
  const b = Buffer.alloc(4 + value.length + ((4 - (value.length % 4)) % 4));
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(value.length, 2);
  value.copy(b, 4);
  return b;
}

export function xorAddr(host, port) {
  const b = Buffer.alloc(8);
  b[1] = 1;
  b.writeUInt16BE(port ^ (MAGIC >>> 16), 2);
  const ip = host.split('.').reduce((a, o) => (a << 8) + Number(o), 0) >>> 0;
  b.writeUInt32BE((ip ^ MAGIC) >>> 0, 4);
  return b;
}

function readXorAddr(v) {
  const port = v.readUInt16BE(2) ^ (MAGIC >>> 16);
  const ip = (v.readUInt32BE(4) ^ MAGIC) >>> 0;
  return { host: [24, 16, 8, 0].map((s) => (ip >>> s) & 255).join('.'), port };
}

export function encode(method, cls, txid, attrs, key) {
  const type = (method & 0x000f) | ((method & 0x0070) << 1) | ((method & 0x0f80) << 2) | ((cls & 1) << 4) | ((cls & 2) << 7);
  const head = Buffer.alloc(20);
  head.writeUInt16BE(type, 0);
  head.writeUInt32BE(MAGIC, 4);
  txid.copy(head, 8);
  let body = Buffer.concat(attrs.map(([t, v]) => attr(t, v)));
  if (key) {
    head.writeUInt16BE(body.length + 24, 2);
    const mac = createHmac('sha1', key).update(Buffer.concat([head, body])).digest();
    body = Buffer.concat([body, attr(ATTR.MESSAGE_INTEGRITY, mac)]);
  }
  head.writeUInt16BE(body.length, 2);
  return Buffer.concat([head, body]);
}

export function decode(buf) {
  if (buf.length < 20 || buf.readUInt32BE(4) !== MAGIC) return null;
  const t = buf.readUInt16BE(0);
  const method = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
  const cls = ((t >> 4) & 1) | ((t >> 7) & 2);
  const attrs = new Map();
  let pos = 20;
  const end = 20 + buf.readUInt16BE(2);
  while (pos + 4 <= end) {
    const at = buf.readUInt16BE(pos);
    const len = buf.readUInt16BE(pos + 2);
    if (!attrs.has(at)) attrs.set(at, buf.subarray(pos + 4, pos + 4 + len));
    pos += 4 + len + ((4 - (len % 4)) % 4);
  }
  const ec = attrs.get(ATTR.ERROR_CODE);
  return { method, cls, txid: buf.subarray(8, 20), attrs, error: ec ? (ec[2] & 7) * 100 + ec[3] : null };
}

/** A TURN client. `transport`: 'udp' | 'tcp'. */
export class TurnClient {
  constructor({ host = '127.0.0.1', port = 3478, transport = 'udp', username, password, localAddress = '127.0.0.1' }) {
    Object.assign(this, { host, port, transport, username, password, localAddress });
    this.pending = new Map();
    this.inbox = [];
    this.realm = null;
    this.nonce = null;
  }

  async open() {
    const onMessage = (m) => {
      const d = decode(m);
      const key = d && d.txid.toString('hex');
      if (d && this.pending.has(key)) { this.pending.get(key)(d); this.pending.delete(key); } else this.inbox.push(m);
    };
    if (this.transport === 'udp') {
      this.sock = dgram.createSocket('udp4');
      this.sock.on('message', onMessage);
      await new Promise((r) => this.sock.bind(0, this.localAddress, r));
      this.write = (b) => this.sock.send(b, this.port, this.host);
    } else {
      this.sock = net.connect({ host: this.host, port: this.port, localAddress: this.localAddress });
      await new Promise((r, j) => { this.sock.once('connect', r); this.sock.once('error', j); });
      let buf = Buffer.alloc(0);
      this.sock.on('data', (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
          if (buf.length < 4) break;
          const len = buf.readUInt16BE(2);
          const frame = (buf[0] >> 6) === 1 ? 4 + len + ((4 - (len % 4)) % 4) : 20 + len;
          if (buf.length < frame) break;
          onMessage(buf.subarray(0, frame));
          buf = buf.subarray(frame);
        }
      });
      this.closed = new Promise((r) => this.sock.once('close', r));
      this.write = (b) => this.sock.write(b);
    }
    return this;
  }

  key() {
    return createHash('md5').update(`${this.username}:${this.realm}:${this.password}`).digest();
  }

  /** One transaction (retransmitted over UDP); resolves with the decoded answer. */
  transact(method, attrs, key) {
    const txid = randomBytes(12);
    const msg = encode(method, 0, txid, attrs, key);
    return new Promise((resolve, reject) => {
      let tries = 0;
      const send = () => {
        if (!this.pending.has(txid.toString('hex'))) return;
        if (tries++ > 6) { this.pending.delete(txid.toString('hex')); reject(new Error(`no answer to method ${method}`)); return; }
        this.write(msg);
        setTimeout(send, this.transport === 'udp' ? 250 : 1500);
      };
      this.pending.set(txid.toString('hex'), resolve);
      send();
    });
  }

  /** An authenticated request: learns realm/nonce from a 401/438 and retries once. */
  async request(method, attrs = []) {
    for (let i = 0; i < 3; i++) {
      const auth = this.nonce ? [[ATTR.USERNAME, Buffer.from(this.username)], [ATTR.REALM, Buffer.from(this.realm)], [ATTR.NONCE, Buffer.from(this.nonce)]] : [];
      const r = await this.transact(method, [...attrs, ...auth], this.nonce ? this.key() : null);
      const fresh = r.error === 401 && !this.nonce || r.error === 438;
      if (fresh && r.attrs.get(ATTR.NONCE)) {
        this.realm = r.attrs.get(ATTR.REALM).toString();
        this.nonce = r.attrs.get(ATTR.NONCE).toString();
        continue;
      }
      return r;
    }
    throw new Error('challenge loop');
  }

  async allocate() {
    const r = await this.request(METHOD.ALLOCATE, [[ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])]]);
    if (r.error) return { error: r.error };
    return { relayed: readXorAddr(r.attrs.get(ATTR.XOR_RELAYED_ADDRESS)) };
  }

  async createPermission(host, port) {
    const r = await this.request(METHOD.CREATE_PERMISSION, [[ATTR.XOR_PEER_ADDRESS, xorAddr(host, port)]]);
    return r.error ?? 'ok';
  }

  async channelBind(channel, host, port) {
    const ch = Buffer.alloc(4); ch.writeUInt16BE(channel, 0);
    const r = await this.request(METHOD.CHANNEL_BIND, [[ATTR.CHANNEL_NUMBER, ch], [ATTR.XOR_PEER_ADDRESS, xorAddr(host, port)]]);
    return r.error ?? 'ok';
  }

  sendIndication(host, port, data) {
    this.write(encode(METHOD.SEND, 1, randomBytes(12), [[ATTR.XOR_PEER_ADDRESS, xorAddr(host, port)], [ATTR.DATA, data]]));
  }

  /** Waits for a Data indication or ChannelData; resolves with its payload. */
  async receive(timeoutMs = 3000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = this.inbox.shift();
      if (m) {
        if ((m[0] >> 6) === 1) return m.subarray(4, 4 + m.readUInt16BE(2));
        const d = decode(m);
        if (d && d.method === METHOD.DATA) return d.attrs.get(ATTR.DATA);
        continue;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error('nothing relayed to us');
  }

  close() {
    if (this.transport === 'udp') this.sock.close(); else this.sock.destroy();
  }
}
