// wsgi-sse browser client: one event stream shared by every tab of an origin.
//
//   import { openStream } from "/sse.js";
//   const stream = openStream({ channels: ["news"] });
//   stream.addEventListener("message", (e) => console.log(e.data, e.channel));
//
// One tab holds the connection (elected with Web Locks; the next one takes
// over, resuming, when it closes or crashes); the others get its events over
// a BroadcastChannel, each only those of its own channels.  No dependencies,
// no build step.  Documented in docs/browser-client.md.

const DEFAULT_CHANNEL = "default";
const RING = 500; // events every tab keeps, to catch up tabs that join
const RING_SIZE = 2 ** 20; // and characters of their data, at most
const SEEN = 1000; // event ids remembered to drop duplicates
const MAX_CHANNELS = 16; // per connection (the server's max_channels), unless told
const PEER_CHECK = 10000; // without Web Locks: how often the holder asks who is there
const OWN_TYPES = new Set(["statuschange", "refused"]); // this client's, not the server's
// Where a connection starts, when not from its own id (a first connection, a
// reset): kept as the position to resume from, never shown.
const POSITION = "wsgi-sse:position";

function splitId(raw) {
  // The server tags ids with their channel (?channelInId=1): "<id> <channel>".
  const space = raw.indexOf(" ");
  return space < 0 ? [raw, null] : [raw.slice(0, space), raw.slice(space + 1)];
}

function streamUrl(options, channels, lastId, token) {
  const url = new URL(options.url, location.href);
  const query = url.searchParams;
  for (const channel of channels) query.append("channel", channel);
  query.set("channelInId", "1");
  if (lastId) query.set("lastEventId", lastId);
  if (token) query.set("token", token);
  return url;
}

/** An event as a stream's listeners receive it. */
export class StreamEvent extends Event {
  constructor(type, { data = "", id = "", channel = null } = {}) {
    super(type);
    this.data = data; // the event's data, as text
    this.id = id; // the server's event id ("" for reset)
    this.lastEventId = id;
    this.channel = channel; // the channel it was published on (null: init, reset)
  }
}

// One EventSource, for some of a stream's channels; after a non-200 answer
// (an expired token, a refusal) the stream looks into it, then re-creates it
// with a jittered back-off.
class Connection {
  constructor(stream, channels, lastId) {
    this.stream = stream;
    this.options = stream.options;
    this.channels = channels;
    this.lastId = lastId;
    this.types = new Set([POSITION]);
    this.failures = 0;
    this.closed = false;
    this.source = null;
    this.timer = null;
    this.open();
  }

  onStatus(status) {
    this.stream.statusFromServer(status, this);
  }

  async open() {
    if (this.closed) return;
    let token = this.options.token;
    try {
      if (typeof token === "function") token = await token([...this.channels]);
    } catch (error) {
      this.retryLater();
      return;
    }
    if (this.closed) return;
    const url = streamUrl(this.options, this.channels, this.lastId, token);
    const source = new EventSource(url, { withCredentials: !!this.options.withCredentials });
    this.source = source;
    for (const type of this.types) this.listen(type);
    // Events the server named "open" or "error" (MessageEvents) reach these too.
    source.onopen = (e) => {
      if (e instanceof MessageEvent) return;
      this.failures = 0;
      this.onStatus("live");
    };
    source.onerror = (e) => {
      if (e instanceof MessageEvent) return;
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        this.stream.failed(this);
      } else {
        this.onStatus("reconnecting"); // the browser reconnects by itself
      }
    };
  }

  retryLater(answer = {}) {
    if (this.closed) return;
    this.onStatus("reconnecting");
    const base = Math.min(30000, 1000 * 2 ** Math.min(this.failures++, 5));
    // Or after the Retry-After of a 503 or 429 (seconds or an HTTP date).
    const value = [503, 429].includes(answer.status) && answer.headers.get("Retry-After");
    const wait = /^\d+$/.test(value) ? value * 1000 : Date.parse(value) - Date.now();
    // (At most an hour: a longer timer would fire at once.)
    const delay = Math.min(3600000, Math.max(wait || 0, base * (0.5 + Math.random())));
    this.timer = setTimeout(() => this.open(), delay);
  }

  addType(type) {
    if (this.types.has(type)) return;
    this.types.add(type);
    if (this.source) this.listen(type);
  }

  listen(type) {
    this.source.addEventListener(type, (e) => {
      if (!(e instanceof MessageEvent)) return; // the connection's own
      // A reset carries no id (the EventSource's lastEventId is stale then): the
      // position that follows it says where the stream goes on from.
      const raw = type === "reset" ? "" : e.lastEventId;
      if (raw || type === "reset") this.lastId = raw;
      this.stream.fromServer({ raw, type, data: e.data });
    });
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.source) this.source.close();
  }
}

/**
 * A live stream of server-sent events for this tab.  Listen with
 * addEventListener(type, fn); "statuschange" reports `status` changes.
 */
export class Stream extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { url: "/sse", share: true, ...options };
    this.maxChannels = this.options.maxChannels || MAX_CHANNELS;
    const channels = this.options.channels;
    this.channels = new Set(channels && channels.length ? channels : [DEFAULT_CHANNEL]);
    this.types = new Set(["message", "init", "reset"]);
    this.refused = new Set(); // channels the server refuses: left out of the connection
    this.told = new Set(); // refused channels of this tab it was told of
    this.status = "connecting"; // "live", "reconnecting", "closed"
    this.holdsConnection = false; // whether this tab holds the shared connection
    this.key = "wsgi-sse:" + new URL(this.options.url, location.href).href;
    this.storageKey = this.key + ":lastEventId";
    this.lastEventId = null;
    try {
      this.lastEventId = sessionStorage.getItem(this.storageKey);
    } catch (error) {
      // storage disabled: no resuming across reloads
    }
    this.seen = new Set();
    this.seenOrder = [];
    this.ring = [];
    this.ringSize = 0;
    this.ringFrom = this.lastEventId; // the id of the event before ring[0]
    this.initGone = false; // an init event left the ring (a new tab gets a reset then)
    this.connections = [];
    this.peers = new Map(); // the other tabs, sharing: id -> {channels, types, seen, locked}
    this.watched = new Map(); // holding: peer id -> the AbortController of its watch
    this.rejoined = []; // holding: the last ids of tabs that came back, for update()
    this.forgotten = new Set(); // holding, without Web Locks: tabs that did not answer
    const shared = this.options.share && typeof BroadcastChannel === "function";
    this.mode = shared ? "shared" : "single";
    if (shared) this.startShared();
    else this.update();
  }

  addEventListener(type, listener, options) {
    super.addEventListener(type, listener, options);
    if (OWN_TYPES.has(type) || this.types.has(type)) return;
    this.types.add(type);
    for (const connection of this.connections) connection.addType(type);
    if (this.mode === "shared") this.announce();
  }

  /** Change the channels this tab receives. */
  setChannels(channels) {
    this.channels = new Set(channels && channels.length ? channels : [DEFAULT_CHANNEL]);
    // Channels asked for again are tried again, even if refused before.
    for (const channel of this.channels) {
      this.refused.delete(channel);
      this.told.delete(channel);
    }
    if (this.mode === "shared") {
      this.announce(false, true);
      if (this.holdsConnection) this.updateUnion();
    } else {
      this.update();
    }
  }

  close() {
    if (this.status === "closed") return;
    this.setStatus("closed");
    this.stepDown();
    if (this.mode === "shared") {
      this.post({ t: "bye" });
      if (this.release) this.release();
      if (this.releaseTab) this.releaseTab();
      if (this.waiting) this.waiting.abort();
      clearTimeout(this.watchTimer);
      this.bus.close();
      removeEventListener("pagehide", this.onPageHide);
      if (typeof document !== "undefined") document.removeEventListener("resume", this.onResume);
    }
  }

  // -- delivering ---------------------------------------------------------

  setStatus(status) {
    if (this.status === status || this.status === "closed") return;
    this.status = status;
    this.dispatchEvent(new StreamEvent("statuschange", { data: status }));
  }

  deliver(ev) {
    // Every tab gets every event of the shared connection: it keeps the last
    // id (to resume from) and shows its own channels.
    if (ev.type !== "reset" && ev.type !== "init" && ev.type !== POSITION && ev.raw) {
      if (this.seen.has(ev.raw)) return;
      this.seen.add(ev.raw);
      this.seenOrder.push(ev.raw);
      if (this.seenOrder.length > SEEN) this.seen.delete(this.seenOrder.shift());
    }
    if (ev.type === "reset") {
      this.ring = [];
      this.ringSize = 0;
      this.ringFrom = null;
      this.initGone = false;
      this.remember(null);
    } else {
      this.ring.push(ev);
      this.ringSize += ev.data.length;
      while (this.ring.length > RING || this.ringSize > RING_SIZE) {
        const dropped = this.ring.shift();
        this.ringSize -= dropped.data.length;
        if (dropped.raw) this.ringFrom = dropped.raw;
        if (dropped.type === "init") this.initGone = true;
      }
      if (ev.raw) this.remember(ev.raw);
    }
    if (ev.type === POSITION) return;
    const [id, channel] = splitId(ev.raw);
    if (channel !== null && !this.channels.has(channel)) return;
    if (this.told.size) this.told.delete(channel); // allowed again: tell if refused again
    if (!this.types.has(ev.type)) return;
    this.dispatchEvent(new StreamEvent(ev.type, { data: ev.data, id, channel }));
  }

  remember(raw) {
    this.lastEventId = raw;
    try {
      if (raw) sessionStorage.setItem(this.storageKey, raw);
      else sessionStorage.removeItem(this.storageKey);
    } catch (error) {
      // storage disabled or full
    }
  }

  refusedNow(channels) {
    // The server refuses these channels: tell this tab of its own, once.
    for (const channel of channels) {
      this.refused.add(channel);
      if (!this.channels.has(channel) || this.told.has(channel)) continue;
      this.told.add(channel);
      this.dispatchEvent(new StreamEvent("refused", { channel }));
    }
  }

  // -- when the server refuses the stream ---------------------------------

  async failed(connection) {
    connection.onStatus("reconnecting");
    // Ask again, with HEAD (answered like a GET, subscribing nothing), for
    // the answer an EventSource does not tell: once per attempt.
    const { channels, lastId, options } = connection;
    let head = {};
    let answers = [];
    try {
      let token = options.token;
      if (typeof token === "function") token = await token([...channels]);
      const ask = (asked, method = "HEAD") =>
        fetch(streamUrl(options, asked, lastId, token), {
          method,
          cache: "no-store",
          credentials: options.withCredentials ? "include" : "same-origin",
          signal: AbortSignal.timeout(10000),
        });
      head = await ask(channels);
      // "400 too many channels (at most 16)": only the body says how many.
      const most =
        head.status === 400 && /at most ([1-9]\d*)/.exec(await (await ask(channels, "GET")).text());
      if (most && most[1] < channels.length) {
        this.maxChannels = +most[1];
      } else if (head.status === 400 || head.status === 403) {
        // Refused for one channel only (a stale tab's user channel after a
        // logout): ask for each alone, leave it out, keep the rest.
        answers = await Promise.all(channels.map(async (c) => (await ask([c])).status));
      }
    } catch (error) {
      // unreachable or not ours to read (CORS): retry as usual
    }
    if (!this.connections.includes(connection)) return;
    if (head.status === 204) {
      // Stopped for good (204 No Content), as an EventSource stops.
      if (this.mode === "shared") this.post({ t: "stop" });
      this.close();
      return;
    }
    const refused = channels.filter((c, i) => answers[i] === 400 || answers[i] === 403);
    if (refused.length) {
      if (this.mode === "shared") this.post({ t: "refused", channels: refused });
      this.refusedNow(refused);
    }
    this.update(); // without the refused channels, or split in smaller sets
    // Nothing changed for this connection: try again later.
    if (this.connections.includes(connection)) connection.retryLater(head);
  }

  // -- the connections ------------------------------------------------------

  update() {
    // Connect to the channels, at most maxChannels per connection: each one
    // stays on its connection; new ones go where there is room, or on a new one.
    if (this.status === "closed") return;
    const [channels, types] = this.union();
    const max = this.maxChannels;
    const wanted = new Set(channels);
    const plan = [];
    for (const old of this.connections) {
      const kept = old.channels.filter((c) => wanted.delete(c));
      while (kept.length) plan.push([old, kept.splice(0, max)]);
    }
    for (const channel of wanted) {
      let slot = plan.find((p) => p[1].length < max);
      if (!slot) plan.push((slot = [null, []]));
      slot[1].push(channel);
    }
    // A tab that came back may have channels no other tab kept: the new
    // connections resume from its position, if earlier (what the others
    // already have is told apart by id).
    const since = this.rejoined.splice(0).reduce((a, b) => this.earlier(a, b, false), null);
    const before = this.connections;
    this.connections = plan.map(([old, chosen]) =>
      old && chosen.join("\n") === old.channels.join("\n")
        ? old
        : new Connection(this, chosen, this.earlier(old ? old.lastId : this.lastEventId, since)),
    );
    for (const old of before) if (!this.connections.includes(old)) old.close();
    for (const connection of this.connections) for (const t of types) connection.addType(t);
  }

  earlier(a, b, keep = true) {
    // Of two ids, the earlier one among the kept events.  An id not among
    // them is older than all of them, or unknown: "a" stays if "keep", "b"
    // is passed over (an id the server does not know would reset every tab).
    const at = (id) => (id === this.ringFrom ? -1 : this.ring.findIndex((ev) => ev.raw === id));
    if (!b || at(b) < -1) return a;
    if (!a) return b;
    const ia = at(a);
    if (ia < -1) return keep ? a : b;
    return ia <= at(b) ? a : b;
  }

  fromServer(ev) {
    if (this.mode === "shared") this.post({ t: "event", ev });
    this.deliver(ev);
  }

  statusFromServer(status, connection) {
    // The server took the stream: none of its channels is refused (any more).
    const accepted = status === "live" ? connection.channels : [];
    // Live once every connection is.
    const live = (c) => c.source?.readyState === EventSource.OPEN;
    if (status === "live" && !this.connections.every(live)) status = this.status;
    if (this.mode === "shared") this.post({ t: "status", status, accepted });
    this.accepted(accepted);
    this.setStatus(status);
  }

  accepted(channels) {
    for (const channel of channels) {
      this.refused.delete(channel);
      this.told.delete(channel); // refused again: tell again
    }
  }

  // -- sharing between tabs -------------------------------------------------

  startShared() {
    this.id = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this.synced = false; // caught up by the holding tab (or holding it)
    this.pending = [];
    this.bus = new BroadcastChannel(this.key);
    this.bus.onmessage = (e) => this.onMessage(e.data);
    this.onPageHide = () => this.post({ t: "bye" });
    addEventListener("pagehide", this.onPageHide);
    // A page the browser froze may have been forgotten meanwhile: hello again.
    this.onResume = () => this.announce();
    if (typeof document !== "undefined") document.addEventListener("resume", this.onResume);
    this.holder = null; // the id of the tab holding the connection, if known
    this.holderSeen = 0; // when it was last heard from
    this.pinged = Date.now(); // the hello below asks the holder to answer
    const locks = typeof navigator !== "undefined" && navigator.locks;
    if (locks && typeof locks.request === "function") {
      // Web Locks: the next tab gets the lock once the holder closes or crashes.
      this.waiting = new AbortController(); // close() withdraws the requests
      const signal = this.waiting.signal;
      // And each tab holds a lock of its own while it lives, which the
      // browser hands to the holder once the tab goes (crashed or not).
      locks
        .request(this.key + ":tab:" + this.id, { signal }, () => {
          this.locked = true;
          this.announce(true);
          locks.request(this.key, { signal }, () => this.lead()).catch(() => {});
          return new Promise((resolve) => {
            this.releaseTab = resolve;
          });
        })
        .catch(() => {});
    } else {
      this.announce(true);
      // No Web Locks (plain-HTTP sites are not secure contexts): elect over
      // the BroadcastChannel.  The holder answers pings; a tab that hears
      // no answer takes over, and of two holders the one with the greater
      // id steps down.
      this.lockless = true;
      this.watch(250 + Math.random() * 100);
    }
  }

  watch(delay = 1000 + Math.random() * 1000) {
    clearTimeout(this.watchTimer);
    this.watchTimer = setTimeout(() => this.checkHolder(), delay);
  }

  checkHolder() {
    if (this.status === "closed") return;
    const now = Date.now();
    if (!this.holdsConnection && now - this.holderSeen > 4000) {
      if (this.pinged && this.holderSeen < this.pinged && now - this.pinged >= 250) {
        this.pinged = 0;
        this.lead();
      } else if (!this.pinged || this.holderSeen >= this.pinged) {
        this.pinged = now;
        this.post({ t: "ping" });
      }
    }
    if (this.holdsConnection) this.checkPeers(now);
    this.watch();
  }

  checkPeers(now) {
    // Without Web Locks, the holder asks who is there every 10 s: the tabs
    // that did not answer the previous ask are gone (crashed: no bye), or
    // frozen, or busy; their channels leave.  A tab told it was forgotten
    // says hello again, and catches up from its last id.
    if (this.askedAt && now - this.askedAt < PEER_CHECK) return;
    if (this.askedAt) {
      const gone = [...this.peers].filter(([, peer]) => peer.seen < this.askedAt);
      for (const [id] of gone) {
        this.peers.delete(id);
        this.forgotten.add(id);
      }
      if (gone.length) {
        this.post({ t: "forgot", ids: gone.map(([id]) => id) });
        this.updateUnion();
      }
    }
    this.askedAt = now;
    this.post({ t: "who" });
  }

  stepDown() {
    this.holdsConnection = false;
    this.askedAt = 0;
    this.forgotten.clear();
    for (const watch of this.watched.values()) watch.abort();
    this.watched.clear();
    for (const connection of this.connections) connection.close();
    this.connections = [];
  }

  post(message) {
    try {
      this.bus.postMessage({ ...message, from: this.id });
    } catch (error) {
      // the channel is closed: this stream is closing too
    }
  }

  announce(first = false, again = false) {
    this.post({
      t: "hello",
      first,
      again, // setChannels(): try refused channels again
      channels: [...this.channels],
      types: [...this.types],
      locked: !!this.locked, // holds its own lock: the holder can watch it
      last: this.lastEventId,
      since: this.synced ? undefined : this.lastEventId,
    });
  }

  onMessage(m) {
    if (this.status === "closed") return;
    if (["holder", "event", "status", "catchup"].includes(m.t)) {
      if (this.lockless && this.holdsConnection && m.t === "holder") {
        if (m.from < this.id) this.stepDown();
        else this.post({ t: "holder" });
      }
      if (!this.holdsConnection) {
        this.holder = m.from;
        this.holderSeen = Date.now();
      }
    }
    if (m.t === "ping") {
      if (this.holdsConnection) this.post({ t: "holder" });
    } else if (m.t === "event") {
      if (this.synced) this.deliver(m.ev);
      else this.pending.push(m.ev);
    } else if (m.t === "status") {
      if (m.accepted) this.accepted(m.accepted);
      this.setStatus(m.status);
    } else if (m.t === "hello") {
      // A new tab learns of the others from their answers.
      if (m.first && !this.peers.has(m.from)) this.announce();
      // A new tab (a reload, a fresh login) or new channels: ask again.
      if (m.first || m.again) for (const c of m.channels) this.refused.delete(c);
      this.peers.set(m.from, {
        channels: m.channels,
        types: m.types,
        seen: Date.now(),
        locked: m.locked,
      });
      if (this.holdsConnection) {
        if (m.locked) this.watchPeer(m.from);
        // A tab back (a reload), or back after it was forgotten: its
        // channels resume from its last id.
        const back = this.forgotten.delete(m.from) ? m.since || m.last : m.since;
        if (back) this.rejoined.push(back);
        this.updateUnion();
        if (m.since !== undefined) this.catchUp(m.from, m.since);
      }
    } else if (m.t === "bye") {
      this.peers.delete(m.from);
      this.watched.get(m.from)?.abort();
      this.watched.delete(m.from);
      if (this.holdsConnection) this.updateUnion();
      else if (this.lockless && m.from === this.holder) {
        // Without Web Locks: the holder left; the tab with the smallest id
        // takes over now, the others check again shortly.
        this.holder = null;
        this.holderSeen = 0;
        this.pinged = Date.now();
        if ([...this.peers.keys()].every((id) => this.id < id)) this.lead();
        else this.watch(400 + Math.random() * 200);
      }
    } else if (m.t === "who") {
      this.announce();
    } else if (m.t === "forgot") {
      for (const id of m.ids) if (id !== this.id) this.peers.delete(id);
      if (m.ids.includes(this.id)) {
        // Forgotten while frozen or busy: say hello again, from this tab's
        // last id (the holder catches it up, and replays its channels).
        this.synced = false;
        this.announce();
      }
    } else if (m.t === "stop") {
      this.close();
    } else if (m.t === "refused") {
      this.refusedNow(m.channels);
    } else if (m.t === "catchup" && m.to === this.id && !this.synced) {
      if (m.reset) this.deliver({ raw: "", type: "reset", data: "" });
      for (const ev of m.events) this.deliver(ev);
      // An init the catch-up held may be queued too (the holder sent it
      // before it read this tab's hello): it is shown once. (Other events
      // are told apart by id; an init's id is its stream's opening position.)
      this.caughtUpInits = new Set(
        m.events.filter((ev) => ev.type === "init").map((ev) => ev.raw + "\n" + ev.data),
      );
      if (!m.events.length && m.last && m.last !== this.lastEventId) {
        // Up to date with the holder: resume from its position if this tab
        // takes over.
        this.remember(m.last);
        this.ring = [];
        this.ringSize = 0;
        this.ringFrom = m.last;
        // (Taking over, it could not give a new tab the holder's init.)
        this.initGone = this.initGone || m.init;
      }
      this.setStatus(m.status);
      this.sync();
    }
  }

  sync() {
    this.synced = true;
    const inits = this.caughtUpInits || new Set();
    this.caughtUpInits = null;
    for (const ev of this.pending.splice(0)) {
      if (ev.type === "init" && inits.delete(ev.raw + "\n" + ev.data)) continue;
      this.deliver(ev);
    }
  }

  catchUp(to, since) {
    // A tab that joins gets what it missed from this tab's recent events:
    // after its own last id, or the last init and what followed it.
    let events = [];
    let reset = false;
    if (since) {
      const at = this.ring.findIndex((ev) => ev.raw === since);
      if (at >= 0) events = this.ring.slice(at + 1);
      else if (since === this.ringFrom) events = this.ring.slice();
      else if (since !== this.lastEventId) reset = true;
    } else {
      // A new tab: the last init and what followed, or a reset if that init
      // is no longer kept.
      const at = this.ring.findLastIndex((ev) => ev.type === "init");
      if (at >= 0) events = this.ring.slice(at);
      else reset = this.initGone;
    }
    const init = this.initGone || this.ring.some((ev) => ev.type === "init");
    this.post({
      t: "catchup",
      to,
      events,
      reset,
      init, // the stream had an init
      last: this.lastEventId,
      status: this.status,
    });
  }

  lead() {
    // Runs while this tab holds the lock: until it closes (or crashes).
    if (this.status === "closed") return undefined;
    this.holdsConnection = true;
    this.holder = this.id;
    this.sync(); // events the previous holder sent before it went away
    const asked = Date.now();
    this.post({ t: "holder" });
    this.post({ t: "who" });
    for (const [id, peer] of this.peers) if (peer.locked) this.watchPeer(id);
    // Tabs that crashed never said bye: forget those that do not answer.
    setTimeout(() => {
      for (const [id, peer] of this.peers) if (peer.seen < asked) this.peers.delete(id);
      this.updateUnion();
    }, 1000);
    this.update();
    return new Promise((resolve) => {
      this.release = resolve;
    });
  }

  watchPeer(id) {
    // Ask for the tab's own lock: the browser grants it once the tab is gone,
    // closed or crashed (a crashed tab says no bye); its channels leave then.
    if (this.watched.has(id) || !this.holdsConnection) return;
    const watch = new AbortController();
    this.watched.set(id, watch);
    navigator.locks
      .request(this.key + ":tab:" + id, { signal: watch.signal }, () => {
        if (this.watched.get(id) !== watch) return;
        this.watched.delete(id);
        if (this.peers.delete(id)) this.updateUnion();
      })
      .catch(() => {});
  }

  union() {
    // The channels and types of this tab and the others.
    const channels = new Set(this.channels);
    const types = new Set(this.types);
    for (const peer of this.peers.values()) {
      for (const c of peer.channels) channels.add(c);
      for (const t of peer.types) types.add(t);
    }
    // Without the refused ones, unless the server refuses every one.
    const kept = [...channels].filter((c) => !this.refused.has(c));
    return [kept.length ? kept : [...channels], types];
  }

  updateUnion() {
    if (!this.holdsConnection) return;
    const types = this.union()[1];
    for (const connection of this.connections) for (const t of types) connection.addType(t);
    // Resume from the last event seen: no tab misses or repeats anything.
    clearTimeout(this.unionTimer);
    this.unionTimer = setTimeout(() => this.holdsConnection && this.update(), 50);
  }
}

/** Open a stream: `openStream({ url: "/sse", channels: ["news"] })`. */
export function openStream(options = {}) {
  return new Stream(options);
}
