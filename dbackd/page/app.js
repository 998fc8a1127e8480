// The page: wires the socket, the world, the canvas and the panels together, and owns what the
// person does (switching servers, logging in to private ones) and what they are told
// (connection state, errors inline, never an alert()).

import { Connection, socketAllowed, socketURL } from "./connection.js";
import { World } from "./world.js";
import { Chat } from "./chat.js";
import { Renderer } from "./renderer.js";
import { People, MessageLog } from "./people.js";
import { Faces } from "./faces.js";
import { Activities } from "./activities.js";

// The daemon's wording for "you were removed from the server you were watching" (a reload).
const SERVER_GONE = "This server is no longer available.";
const KICKED_TO_LOGIN = [
  "This server now requires Discord authentication. Please login with Discord.",
  "Who may see this server has changed. Please login with Discord again.",
];
// The private server of the embedded demo config, whose mock login the dialog may mention.
const DEMO_PRIVATE = { snowflake: "123456789012345678", id: "oauth" };

const $ = (id) => document.getElementById(id);

const url = socketURL();
const params = new URLSearchParams(location.search);
const asked = params.get("s");
// ?embed=1: the compact page for another site's <iframe>, the terrarium without the side panel.
const embedded = params.get("embed") === "1";
const framedAcross = framedByAnotherSite();

/**
 * Whether a page of another origin frames this one. A login typed here could then be overlaid or
 * clicked through by that page, so the page never asks for one (its daemon's frame-ancestors
 * decides which sites may frame it at all).
 */
function framedByAnotherSite() {
  if (window.top === window.self) return false;
  const ancestors = location.ancestorOrigins;
  if (ancestors && Array.from(ancestors).some((o) => o !== location.origin)) return true;
  try {
    return window.top.location.origin !== location.origin;
  } catch {
    return true; // reading another origin's location throws
  }
}

const state = {
  joined: false, // the socket is a member of world.server (it gets its events)
  askedOnSocket: false, // this socket has been sent its first connect
  pending: [], // connects sent and not yet answered, oldest first: {id, creds, login}
  saved: new Map(), // server id -> credentials that worked, for rejoining after a reconnect
  loginFor: null, // the server entry the login dialog is open for
  socketAllowed: false, // the socket address is this page's daemon or one its operator lists
  counters: { received: 0, presences: 0, messages: 0, joins: 0 },
};

// -- the parts -------------------------------------------------------------------------------
const log = new MessageLog($("log"), $("log-empty"));
const chat = new Chat((bubble) => log.state(bubble));
const faces = new Faces((uid, face, faceURL) => {
  renderer.faceReady(uid, face);
  people.face(uid, faceURL);
});
const activities = new Activities((uid, text) => {
  renderer.activity(uid, text);
  people.activity(uid, text);
});
const renderer = new Renderer($("terrarium"), chat, {
  onHover: (uid) => hoverRow(uid),
  onPick: (uid) => people.reveal(uid),
  faces,
  activityOf: (uid) => activities.of(uid),
});
const world = new World({
  reset(users, same) {
    if (!same) {
      chat.clear();
      log.clear();
    }
    // A private server's faces stay with it: the daemon gives faces of public servers only.
    faces.reset(world.server.passworded ? null : (world.server.snowflake || null));
    activities.reset(world.server.passworded ? null : (world.server.snowflake || null));
    renderer.reset(users, same, world.server.snowflake || world.server.id);
    people.reset();
  },
  added(user) {
    renderer.add(user);
    people.touch(user.uid);
  },
  changed(user, change) {
    renderer.changed(user, change);
    people.touch(user.uid);
  },
  removed(user) {
    renderer.remove(user.uid);
    chat.forget(user.uid);
    people.touch(user.uid);
  },
  said(user, text, channel) {
    const bubble = chat.push(user.uid, text, channel, performance.now());
    log.add(bubble, user);
  },
});
const people = new People(
  { list: $("people"), legend: $("legend"), count: $("people-count") },
  () => world.users,
  {
    hover: (uid) => renderer.highlight(uid),
    changedCounts: describeWorld,
    faceURL: (uid) => faces.url(uid),
    activityOf: (uid) => activities.of(uid),
  },
);
let hoveredRow = null;
function hoverRow(uid) {
  if (hoveredRow !== null) hoveredRow.classList.remove("hovered");
  hoveredRow = uid === null ? null : $("people").querySelector(`li[data-uid="${CSS.escape(uid)}"]`);
  if (hoveredRow !== null) hoveredRow.classList.add("hovered");
}

const connection = new Connection(url, {
  frame: onFrame,
  state: showConnection,
  problem: (text) => showBanner(text),
});

// -- frames ----------------------------------------------------------------------------------
function onFrame(msg) {
  state.counters.received++;
  switch (msg.type) {
    case "server-list":
      onServerList(msg.data);
      break;
    case "server-join":
      onJoin(msg.data);
      break;
    case "presence":
      state.counters.presences++;
      world.presence(msg);
      break;
    case "message":
      state.counters.messages++;
      world.message(msg);
      break;
    case "error":
      onError(String(msg.data?.message ?? "Something went wrong."));
      break;
    default:
      break; // update-clientid and anything newer: nothing to show
  }
}

function onServerList(data) {
  connection.healthy();
  world.setServers(data);
  renderServers();
  // Only the first list on a socket is an invitation to join. Later ones come from config
  // reloads; re-joining on each (as the d-zone frontend does) would rebuild the world for nothing.
  if (state.askedOnSocket) return;
  state.askedOnSocket = true;
  const target = world.server?.id ?? asked ?? fallback();
  const entry = world.find(target);
  if (entry !== null && entry.passworded && !state.saved.has(entry.id)) {
    if (world.server === null) send(fallback());
    openLogin(entry);
    return;
  }
  send(target, state.saved.get(entry?.id ?? target) || null);
}

function onJoin(data) {
  const request = state.pending.shift() || null;
  const entry = world.join(data);
  state.joined = true;
  state.counters.joins++;
  if (request !== null && request.creds !== null) state.saved.set(entry.id, request.creds);
  if (state.loginFor !== null && state.loginFor.id === entry.id) closeLogin();
  $("server-name").textContent = entry.name;
  $("server-name").dataset.server = entry.id;
  document.title = `${entry.name} · dbackd`;
  const next = new URL(location.href);
  next.searchParams.set("s", entry.id);
  history.replaceState(null, "", next);
  next.searchParams.delete("embed");
  $("open-full").href = next.href;
  renderServers();
  showStale();
}

function onError(text) {
  if (text === SERVER_GONE || KICKED_TO_LOGIN.includes(text)) {
    // Not an answer to a connect: the daemon took this socket out of its server.
    const current = world.server;
    state.joined = false;
    showStale();
    showBanner(text);
    if (text === SERVER_GONE || current === null) {
      send(fallback());
    } else {
      state.saved.delete(current.id);
      openLogin(world.find(current.id) || current, text);
    }
    return;
  }
  const failed = state.pending.shift();
  if (failed === undefined) {
    showBanner(text);
    return;
  }
  if (failed.creds !== null) state.saved.delete(failed.id);
  if (failed.login && state.loginFor !== null) {
    showLoginError(text);
  } else {
    showBanner(text);
  }
  // A refused connect may have taken the socket out of the server it was in: go back there.
  if (world.server !== null && world.server.id !== failed.id) {
    send(world.server.id, state.saved.get(world.server.id) || null);
  } else if (world.server === null && world.find(failed.id)?.id !== fallback() && failed.id !== fallback()) {
    send(fallback()); // as the d-zone frontend: with no world yet, fall back to the default server
  }
}

/** The server to show when there is nothing else to show: the default, else the first public one. */
function fallback() {
  const entry = world.find("default") || world.servers.find((s) => !s.passworded);
  return entry ? entry.id : "default";
}

function send(id, creds = null, login = false) {
  if (!connection.send({ type: "connect", data: { server: id, ...(creds || {}) } })) return false;
  state.pending.push({ id, creds, login });
  return true;
}

// -- servers ---------------------------------------------------------------------------------
function renderServers() {
  const list = $("servers");
  const current = world.server?.id ?? null;
  const items = world.servers.map((s) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "server";
    button.dataset.server = s.id;
    const name = document.createElement("span");
    name.className = "server-name";
    name.textContent = s.name;
    button.append(name);
    if (s.passworded) {
      const lock = document.createElement("span");
      lock.className = "lock";
      lock.setAttribute("role", "img");
      lock.setAttribute("aria-label", "private");
      lock.title = "Private: needs a login";
      button.append(lock);
    }
    if (s.default) {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = "default";
      button.append(tag);
    }
    if (s.id === current) button.setAttribute("aria-current", "true");
    li.append(button);
    return li;
  });
  list.replaceChildren(...items);
}

$("servers").addEventListener("click", (e) => {
  const button = e.target.closest("button[data-server]");
  if (button === null) return;
  const entry = world.find(button.dataset.server);
  if (entry === null) return;
  if (world.server !== null && world.server.id === entry.id && state.joined) return;
  const creds = state.saved.get(entry.id) || null;
  if (entry.passworded && creds === null) {
    openLogin(entry);
    return;
  }
  if (!send(entry.id, creds)) showBanner("Not connected to the daemon right now; try again once it is back.");
});

// -- logging in ------------------------------------------------------------------------------
const dialog = $("login");

function openLogin(entry, message = "") {
  if (!state.socketAllowed) return; // never ask for a login that could go to a stranger
  if (framedAcross) {
    showBanner(`${entry.name} is private: open the page on its own to log in.`);
    $("open-full").hidden = false;
    return;
  }
  state.loginFor = entry;
  $("login-server").textContent = entry.name;
  $("login-demo").hidden = !(entry.snowflake === DEMO_PRIVATE.snowflake && entry.id === DEMO_PRIVATE.id);
  setBusy(false);
  if (message) showLoginError(message);
  else $("login-error").hidden = true;
  if (!dialog.open) dialog.showModal();
  $("login-token").focus();
}

function closeLogin() {
  state.loginFor = null;
  if (dialog.open) dialog.close();
}

function showLoginError(text) {
  setBusy(false);
  $("login-error").textContent = text;
  $("login-error").hidden = false;
}

function setBusy(busy) {
  for (const b of dialog.querySelectorAll("button[type=submit]")) b.disabled = busy;
  dialog.classList.toggle("busy", busy);
}

function submitLogin(e) {
  e.preventDefault();
  const entry = state.loginFor;
  if (entry === null) return;
  let creds;
  if (e.currentTarget.dataset.way === "password") {
    const password = $("login-password").value;
    if (!password) return showLoginError("Enter the server's password.");
    creds = { password };
  } else {
    const token = $("login-token").value.trim();
    const id = $("login-user").value.trim();
    if (!token || !id) return showLoginError("Enter both the access token and the Discord user id it belongs to.");
    if (!/^\d{1,20}$/.test(id)) return showLoginError("A Discord user id is a number, such as 80351110224678912.");
    creds = { discordToken: token, discordUser: { id } };
  }
  $("login-error").hidden = true;
  if (!send(entry.id, creds, true)) return showLoginError("Not connected to the daemon right now; try again once it is back.");
  setBusy(true);
}
for (const form of dialog.querySelectorAll("form.login-way")) form.addEventListener("submit", submitLogin);

$("login-cancel").addEventListener("click", closeLogin);
dialog.addEventListener("close", () => {
  state.loginFor = null;
});

// -- what the person is told -------------------------------------------------------------------
let countdown = 0;
function showConnection({ state: s, attempt, retryAt }) {
  const el = $("conn");
  el.dataset.state = s;
  clearInterval(countdown);
  const text = $("conn-text");
  $("conn-retry").hidden = !(retryAt > 0);
  if (s === "live") {
    text.textContent = "Live";
  } else if (s === "failed") {
    text.textContent = "Cannot connect";
  } else {
    const word = s === "connecting" ? "Connecting" : "Reconnecting";
    const tick = () => {
      const left = Math.max(0, retryAt - performance.now());
      text.textContent = retryAt > 0 && left > 0
        ? `${word}… next try in ${(left / 1000).toFixed(left < 10000 ? 1 : 0)} s (attempt ${attempt + 1})`
        : `${word}…`;
    };
    tick();
    if (retryAt > 0) countdown = setInterval(tick, 200);
  }
  if (s !== "live") {
    state.joined = false;
    state.askedOnSocket = false;
    state.pending.length = 0;
  }
  showStale();
}
$("conn-retry").addEventListener("click", () => connection.retryNow());

function showStale() {
  const stale = world.server !== null && !state.joined;
  $("stage").classList.toggle("stale", stale);
  renderer.rest(stale);
}

function showBanner(text) {
  $("banner-text").textContent = text;
  $("banner").hidden = false;
}
$("banner-close").addEventListener("click", () => {
  $("banner").hidden = true;
});

function describeWorld(counts, total) {
  const name = world.server?.name ?? "The terrarium";
  const parts = [`${counts.online} online`, `${counts.idle} idle`, `${counts.dnd} do not disturb`, `${counts.offline} offline`];
  $("terrarium").setAttribute("aria-label", `${name}: ${total} ${total === 1 ? "person" : "people"}, ${parts.join(", ")}`);
  $("empty").hidden = !(state.joined && total === 0);
}

$("zoom-in").addEventListener("click", () => renderer.zoomBy(1.4));
$("zoom-out").addEventListener("click", () => renderer.zoomBy(1 / 1.4));
$("zoom-fit").addEventListener("click", () => renderer.fit());

$("socket-hint").textContent = `?socketURL=${url}`;
if (embedded) document.body.classList.add("embed");
if (embedded || framedAcross) {
  // the whole page, in a tab of its own, for the server shown (where a login is possible)
  const full = new URL(location.href);
  full.searchParams.delete("embed");
  $("open-full").href = full.href;
  $("open-full").hidden = !embedded;
}

// Read by the browser tests and the benchmark; nothing on the page depends on it.
window.dbackdPage = {
  stats: () => ({ ...renderer.stats(), ...state.counters, joined: state.joined, server: world.server?.id ?? null,
    facesLoaded: faces.loaded() }),
};

renderer.start();
state.socketAllowed = await socketAllowed(url);
if (state.socketAllowed) {
  connection.start();
} else {
  showConnection({ state: "failed", attempt: 0, retryAt: 0 });
  showBanner(`This page connects only to its own daemon and to the addresses its operator allows; ` +
    `${url} is not one of them. It did not connect there and asks for no login.`);
}
