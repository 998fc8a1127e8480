// The world as the daemon describes it: the server list and the joined server's users by uid.
// Applies server-list, server-join, presence and message frames exactly as the protocol says
// and tells its listeners what changed. No drawing and no DOM here.

export const STATUSES = ["online", "idle", "dnd", "offline"];
const FALLBACK_COLOR = "#c8d6e5";
const COLOR = /^#[0-9a-f]{6}$/i;

function status(value) {
  return STATUSES.includes(value) ? value : "offline";
}

function color(value) {
  return typeof value === "string" && COLOR.test(value) ? value.toLowerCase() : FALLBACK_COLOR;
}

export class World {
  /**
   * listener: {reset(users, sameServer), added(user), changed(user, {status, color, name}),
   *            removed(user), said(user, text, channel)}; every method is optional.
   */
  constructor(listener) {
    this.listener = listener;
    this.servers = []; // [{snowflake, id, name, passworded, default}] in the daemon's order
    this.server = null; // the joined server's entry, or a stand-in when the list does not name it
    this.users = new Map(); // uid -> {uid, name, status, color}
  }

  setServers(data) {
    this.servers = Object.entries(data || {}).map(([snowflake, s]) => ({
      snowflake,
      id: String(s.id ?? snowflake),
      name: String(s.name ?? s.id ?? snowflake),
      passworded: s.passworded === true,
      default: s.default === true,
    }));
  }

  /** A server by short id, "default" or snowflake, as the daemon resolves `connect`. */
  find(ref) {
    if (ref === null || ref === undefined || ref === "" || ref === "default") {
      return this.servers.find((s) => s.default) || null;
    }
    return this.servers.find((s) => s.id === ref) || this.servers.find((s) => s.snowflake === ref) || null;
  }

  /** server-join: the whole world at once. Returns the server's entry. */
  join(data) {
    const asked = data?.request?.server ?? "default";
    const entry = this.find(asked) || { snowflake: null, id: String(asked), name: String(data?.serverName ?? asked),
                                        passworded: false, default: false };
    const same = this.server !== null && this.server.id === entry.id;
    this.server = { ...entry, name: String(data?.serverName ?? entry.name) };
    const next = new Map();
    for (const [key, u] of Object.entries(data?.users || {})) {
      // The d-zone frontend skips users without a name; so do we.
      if (!u || typeof u.username !== "string" || u.username === "") continue;
      const uid = String(u.uid ?? key);
      next.set(uid, { uid, name: u.username, status: status(u.status), color: color(u.roleColor) });
    }
    this.users = next;
    this.listener.reset?.(next, same);
    return this.server;
  }

  /** Frames about another server (one we have just left) are not ours to apply. */
  _ours(frame) {
    return frame.server === undefined || this.server === null || this.server.snowflake === null ||
      String(frame.server) === this.server.snowflake;
  }

  presence(frame) {
    const d = frame.data;
    if (!d || d.uid === undefined || this.server === null || !this._ours(frame)) return;
    const uid = String(d.uid);
    const user = this.users.get(uid);
    if (d.delete === true) {
      if (user === undefined) return;
      this.users.delete(uid);
      this.listener.removed?.(user);
      return;
    }
    if (user === undefined) {
      // An unknown uid is an arrival, named or not.
      const name = typeof d.username === "string" && d.username !== "" ? d.username : uid;
      const added = { uid, name, status: status(d.status), color: color(d.roleColor) };
      this.users.set(uid, added);
      this.listener.added?.(added);
      return;
    }
    const change = { status: false, color: false, name: false };
    if (d.status !== undefined && status(d.status) !== user.status) {
      user.status = status(d.status);
      change.status = true;
    }
    if (d.roleColor !== undefined && color(d.roleColor) !== user.color) {
      user.color = color(d.roleColor);
      change.color = true;
    }
    // Unlike the d-zone frontend, a rename is shown at once.
    if (typeof d.username === "string" && d.username !== "" && d.username !== user.name) {
      user.name = d.username;
      change.name = true;
    }
    if (change.status || change.color || change.name) this.listener.changed?.(user, change);
  }

  message(frame) {
    const d = frame.data;
    if (!d || this.server === null || !this._ours(frame)) return;
    const user = this.users.get(String(d.uid));
    if (user === undefined || typeof d.message !== "string") return; // as the frontend: unknown speakers are dropped
    this.listener.said?.(user, d.message, String(d.channel ?? ""));
  }
}
