// sio.js — a tiny Socket.IO v5 client (Engine.IO 4 framing) over WebSocket only.
//
// Why it exists: the demo page must not depend on vendored third-party JavaScript, so we
// speak the small part of the protocol we need ourselves. Scope: one namespace per
// connection, JSON payloads only (no binary attachments), no HTTP long-polling, no
// automatic reconnection.
//
// Wire format (one Engine.IO packet per WebSocket message):
//   server `0{"sid",..,"pingInterval","pingTimeout"}`  Engine.IO open
//   client `40/study,{"token":..}`                     Socket.IO CONNECT with auth
//   server `40/study,{"sid":..}` | `44/study,{"message":..}`  connected | connect_error
//   server `2` -> client `3`                            ping / pong
//   `42/study,["event",payload]`                        event
//   `42/study,<id>["event",payload]` -> `43/study,<id>[result]`  event with ack / ack reply
//   `41/study,`                                         namespace disconnect
//
// API:
//   const s = sioConnect(url, '/study', { token });   // url: http(s)://host[:port] or ws(s)://...
//   s.on('connect' | 'connect_error' | 'disconnect' | <server event>, fn)
//   s.emit(event, payload); await s.emitWithAck(event, payload, timeoutMs); s.close();

export function sioConnect(url, ns = '/', auth = undefined) {
  return new SioSocket(url, ns, auth);
}

function wsUrl(url) {
  const u = new URL(url || globalThis.location.href, globalThis.location && globalThis.location.href);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  else if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw new Error(`sio: unsupported URL ${url}`);
  u.pathname = '/socket.io/';
  u.search = '?EIO=4&transport=websocket';
  u.hash = '';
  return u.toString();
}

class SioSocket {
  constructor(url, ns, auth) {
    if (typeof ns !== 'string' || !ns.startsWith('/')) throw new Error(`sio: namespace must start with "/": ${ns}`);
    this.ns = ns;
    this.connected = false;
    this.id = null;
    this._handlers = new Map();
    this._acks = new Map(); // ack id -> { resolve, reject, timer }
    this._nextAck = 0;
    this._closed = false;
    this._pingTimer = null;
    this._pingDeadlineMs = 45000;
    this._auth = auth;
    this._ws = new WebSocket(wsUrl(url));
    this._ws.onmessage = (ev) => this._onPacket(String(ev.data));
    this._ws.onclose = () => this._teardown(this.connected ? 'transport close' : 'transport error');
    // An error is always followed by close; _teardown reports it once (as connect_error if
    // the namespace never connected).
    this._ws.onerror = () => {};
  }

  on(event, fn) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(fn);
    return this;
  }

  off(event, fn) {
    const set = this._handlers.get(event);
    if (set) set.delete(fn);
    return this;
  }

  emit(event, payload) {
    this._send(`2${this._prefix()}${JSON.stringify([event, payload])}`);
  }

  emitWithAck(event, payload, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      if (!this.connected) return reject(new Error(`sio: not connected (emit ${event})`));
      const id = this._nextAck++;
      const timer = setTimeout(() => {
        this._acks.delete(id);
        reject(new Error(`sio: ack timeout for ${event} after ${timeoutMs} ms`));
      }, timeoutMs);
      this._acks.set(id, { resolve, reject, timer });
      this._send(`2${this._prefix()}${id}${JSON.stringify([event, payload])}`);
    });
  }

  close() {
    if (this._closed) return;
    if (this.connected) this._send(`1${this._prefix()}`);
    this._teardown('io client disconnect');
    try { this._ws.close(); } catch { /* already closed */ }
  }

  // `/study,` for a non-root namespace, nothing for "/".
  _prefix() {
    return this.ns === '/' ? '' : `${this.ns},`;
  }

  _send(socketIoPacket) {
    // Engine.IO "message" packet type is 4, followed by the Socket.IO packet.
    if (this._ws.readyState === WebSocket.OPEN) this._ws.send(`4${socketIoPacket}`);
  }

  _fire(event, ...args) {
    const set = this._handlers.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { console.error(`sio: handler for ${event} threw`, e); }
    }
  }

  _armPingDeadline() {
    clearTimeout(this._pingTimer);
    this._pingTimer = setTimeout(() => {
      this._teardown('ping timeout');
      try { this._ws.close(); } catch { /* ignore */ }
    }, this._pingDeadlineMs);
  }

  _onPacket(data) {
    const eio = data[0];
    if (eio === '0') { // open
      try {
        const open = JSON.parse(data.slice(1));
        this._pingDeadlineMs = (open.pingInterval || 25000) + (open.pingTimeout || 20000);
      } catch { /* keep the default deadline */ }
      this._armPingDeadline();
      const auth = this._auth === undefined ? '' : JSON.stringify(this._auth);
      this._send(`0${this._prefix()}${auth}`);
    } else if (eio === '2') { // ping
      this._armPingDeadline();
      if (this._ws.readyState === WebSocket.OPEN) this._ws.send('3');
    } else if (eio === '1') { // close
      this._teardown('transport close');
    } else if (eio === '4') {
      this._onSocketIo(data.slice(1));
    }
  }

  _onSocketIo(p) {
    const type = p[0];
    let i = 1;
    let nsp = '/';
    if (p[i] === '/') {
      const comma = p.indexOf(',', i);
      nsp = comma === -1 ? p.slice(i) : p.slice(i, comma);
      i = comma === -1 ? p.length : comma + 1;
    }
    if (nsp !== this.ns) return;
    let idStr = '';
    while (i < p.length && p[i] >= '0' && p[i] <= '9') idStr += p[i++];
    const body = p.slice(i);
    let data;
    if (body) {
      try { data = JSON.parse(body); } catch {
        console.error('sio: unparsable packet', p.slice(0, 200));
        return;
      }
    }
    switch (type) {
      case '0': // CONNECT ok
        this.connected = true;
        this.id = data && data.sid;
        this._fire('connect');
        break;
      case '4': // CONNECT_ERROR
        this._fire('connect_error', { message: (data && data.message) || 'connect_error', data: data && data.data });
        this._closed = true;
        try { this._ws.close(); } catch { /* ignore */ }
        break;
      case '1': // DISCONNECT from the server
        this._teardown('io server disconnect');
        try { this._ws.close(); } catch { /* ignore */ }
        break;
      case '2': { // EVENT
        if (!Array.isArray(data) || typeof data[0] !== 'string') return;
        const [event, ...args] = data;
        if (idStr !== '') {
          const id = idStr;
          args.push((result) => this._send(`3${this._prefix()}${id}${JSON.stringify([result])}`));
        }
        this._fire(event, ...args);
        break;
      }
      case '3': { // ACK
        const pending = this._acks.get(Number(idStr));
        if (!pending) return;
        this._acks.delete(Number(idStr));
        clearTimeout(pending.timer);
        pending.resolve(Array.isArray(data) ? data[0] : data);
        break;
      }
      default:
        console.error('sio: unsupported packet type', type);
    }
  }

  _teardown(reason) {
    if (this._closed && !this.connected) {
      clearTimeout(this._pingTimer);
      return;
    }
    const wasConnected = this.connected;
    this._closed = true;
    this.connected = false;
    clearTimeout(this._pingTimer);
    for (const [, pending] of this._acks) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`sio: disconnected (${reason})`));
    }
    this._acks.clear();
    if (wasConnected) this._fire('disconnect', reason);
    else this._fire('connect_error', { message: reason.replace(/ /g, '_') });
  }
}
