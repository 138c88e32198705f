// Linkfabric's web console: a control endpoint in the browser, speaking the
// wire of docs/protocol.md to the master over NATS (WebSocket), as a plain
// client. It keeps its lists live through the master's subscriptions
// (notes: slave_updates, instance_updates), follows the output of the
// instance whose console is open, and re-subscribes by itself whenever the
// master changes (a restart, a failover) or the connection comes back.

import { headers, wsconnect, errors as natsErrors } from "@nats-io/nats-core";

const cfg = JSON.parse(document.querySelector('meta[name="linkfabric"]').content);
const prefix = cfg.prefix || "lf";
const prefixTokens = prefix.split(".").length;
const enc = new TextEncoder();
const dec = new TextDecoder();
const $ = (id) => document.getElementById(id);

// FabricError is a failed request: the fabric's stable code and its text.
class FabricError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// What the page knows; rendered by render().
const state = {
  nc: null,
  user: "",
  login: "", // who the page logged in to NATS as, in words
  session: "", // the master session that answered last
  slaves: new Map(), // slave_id -> entry of slave_updates
  instances: new Map(), // instance_id -> entry of instance_updates
  seen: { slave_updates: 0, instance_updates: 0 }, // newest updated_at_ms, per event
  bans: [],
  console: null, // the instance whose console is open: {id, last: time, atLast: Set}
  history: [],
  historyAt: 0,
  deleting: null, // the instance whose Delete waits for a second press
};

// --- the wire -----------------------------------------------------------

const subject = (type) => `${prefix}.control.${state.user}.master.0.${type}`;

// request sends a request to the master and returns its response's JSON,
// or throws a FabricError: the code the master answered with, or one of
// the fabric's codes for what NATS said.
async function request(type, payload, timeoutMs = 10000) {
  const nc = state.nc;
  if (!nc) {
    throw new FabricError("not_connected", "not connected to NATS");
  }
  const h = headers();
  h.set("Lf-Timeout", String(timeoutMs));
  let m;
  try {
    m = await nc.request(subject(type), enc.encode(JSON.stringify(payload)), { timeout: timeoutMs + 1000, headers: h });
  } catch (e) {
    throw natsFailure(e, type);
  }
  const session = m.headers?.get("Lf-Session");
  if (session) {
    noteSession(session);
  }
  const code = m.headers?.get("Lf-Error");
  if (code) {
    throw new FabricError(code, dec.decode(m.data));
  }
  return JSON.parse(dec.decode(m.data));
}

// natsFailure turns what NATS threw for a request into the fabric's terms.
function natsFailure(e, type) {
  if (e instanceof natsErrors.NoRespondersError || e?.cause instanceof natsErrors.NoRespondersError) {
    return new FabricError("not_connected", `no master answers ${type}: none is running; nothing was done`);
  }
  if (e instanceof natsErrors.PermissionViolationError || e?.cause instanceof natsErrors.PermissionViolationError) {
    const f = new FabricError("permission_denied", `the NATS server does not let this user send ${type}: nothing was done`);
    f.broker = true;
    return f;
  }
  if (e instanceof natsErrors.TimeoutError || e?.cause instanceof natsErrors.TimeoutError) {
    return new FabricError("timeout", `no answer to ${type} in time: it may or may not have run`);
  }
  return new FabricError("not_connected", `${type}: ${e?.message || e}: it may or may not have run`);
}

// onMessage handles what the master sends this control.
function onMessage(m) {
  const t = m.subject.split(".");
  if (t[prefixTokens] !== "master") {
    return; // only the master speaks to controls
  }
  const type = t[prefixTokens + 4];
  let payload;
  try {
    payload = JSON.parse(dec.decode(m.data));
  } catch {
    return;
  }
  switch (type) {
    case "slave_updates":
      applyUpdates("slave_updates", state.slaves, "slave_id", payload.updates);
      break;
    case "instance_updates":
      applyUpdates("instance_updates", state.instances, "instance_id", payload.updates);
      break;
    case "instance_output":
      showOutput(payload);
      break;
    case "prepare_disconnect":
      // The master is stopping: it waits for this answer. What it ran for
      // this page comes back through resync once another master answers.
      m.respond(enc.encode("{}"));
      setStatus("the master is stopping; waiting for it to come back", "bad");
      break;
  }
}

// applyUpdates merges a subscription's updates: an entry is replaced only
// by a newer one (updated_at_ms), so what is replayed on re-subscribing
// is dropped, and a deleted entry is kept as a tombstone until a newer
// update.
function applyUpdates(event, map, key, updates) {
  for (const u of updates || []) {
    const cur = map.get(u[key]);
    if (cur && cur.updated_at_ms >= u.updated_at_ms) {
      continue;
    }
    map.set(u[key], u);
    state.seen[event] = Math.max(state.seen[event], u.updated_at_ms);
  }
  render();
}

// noteSession notices a master other than the one that answered before.
function noteSession(session) {
  if (session === state.session) {
    return;
  }
  const first = state.session === "";
  state.session = session;
  if (!first) {
    resync();
  }
}

// resync (re)subscribes to the lists, and to the open console's output
// with what was missed, retrying until a master answers. Calls while one
// runs make it run once more when it ends.
let syncing = null;
let syncAgain = false;
function resync() {
  if (syncing) {
    syncAgain = true;
    return syncing;
  }
  syncing = (async () => {
    const nc = state.nc;
    for (let wait = 250; state.nc && state.nc === nc; wait = Math.min(wait * 2, 4000)) {
      syncAgain = false;
      try {
        for (const event of ["slave_updates", "instance_updates"]) {
          await request("subscribe", { event, subscribe: true, since_ms: state.seen[event] });
        }
        await followOutput();
        await loadBans();
        setStatus(`connected as ${state.user}`, "ok");
        if (!syncAgain) {
          return;
        }
      } catch (e) {
        if (state.nc !== nc) {
          return; // logged out (or in again) meanwhile: this login's failures are moot
        }
        if (!(e instanceof FabricError)) {
          showError(e, "resync"); // a fault of the page's own
          return;
        }
        if (e.broker) {
          brokerRefused(state.nc);
          return;
        }
        if (e.code === "permission_denied" || e.code === "invalid_message") {
          showError(e, "subscribe");
          setStatus(`connected as ${state.user}`, "ok");
          return;
        }
        setStatus(`waiting for the master: ${e.message} (${e.code})`, "bad");
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  })().finally(() => {
    syncing = null;
  });
  return syncing;
}

// followOutput asks the master for the open console's output, from the
// last line shown on (the master replays what it still holds), or for
// none.
async function followOutput() {
  const c = state.console;
  if (!c) {
    return request("set_instance_output_subscriptions", { instance_ids: [] });
  }
  return request("set_instance_output_subscriptions", { instance_ids: [c.id], since: [{ instance_id: c.id, time: c.last }] });
}

async function loadBans() {
  try {
    state.bans = (await request("list_banned_players", {})).bans || [];
  } catch (e) {
    if (e.code !== "permission_denied") {
      throw e;
    }
    state.bans = [];
  }
  renderBans();
}

// --- connecting -----------------------------------------------------------

async function connect(form) {
  if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/.test(form.user)) {
    showError(new FabricError("invalid_message", "a control user is 1-64 letters, digits, '-' or '_'"));
    return;
  }
  const opts = {
    servers: cfg.servers,
    name: `linkfabric console ${form.user}`,
    inboxPrefix: `${prefix}._inbox.control.${form.user}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 1000,
    pingInterval: 10000,
  };
  const login = form.natsUser ? `NATS user ${form.natsUser}` : form.token ? "the token" : "a connection without credentials";
  if (form.natsUser) {
    opts.user = form.natsUser;
    opts.pass = form.password;
  } else if (form.token) {
    opts.token = form.token;
  }
  setStatus("connecting…");
  let nc;
  try {
    nc = await wsconnect(opts);
  } catch (e) {
    setStatus("not connected", "bad");
    const why = e instanceof natsErrors.AuthorizationError || e?.cause instanceof natsErrors.AuthorizationError
      ? `it does not accept ${form.natsUser ? `this password for ${login}` : login}: check it and connect again`
      : e.message;
    showError(new FabricError("not_connected", `cannot connect to NATS at ${cfg.servers.join(", ")}: ${why}`));
    return;
  }
  Object.assign(state, { nc, user: form.user, login, session: "" });
  state.slaves.clear();
  state.instances.clear();
  state.seen = { slave_updates: 0, instance_updates: 0 };
  localStorage.setItem("linkfabric.user", form.user);
  localStorage.setItem("linkfabric.natsUser", form.natsUser || "");
  // The server refuses a subscription to a user who may not make it: that
  // error comes to the subscription's callback (not always also to the
  // status stream), and means this user is not control form.user's.
  const refused = (err) => {
    if (err instanceof natsErrors.PermissionViolationError || err?.cause instanceof natsErrors.PermissionViolationError) {
      brokerRefused(nc);
    }
  };
  nc.subscribe(`${prefix}.*.*.control.${form.user}.>`, { callback: (err, m) => (err ? refused(err) : onMessage(m)) });
  // A master that has just become active says so to every control.
  nc.subscribe(`${prefix}.master.0.control._all._hello.>`, { callback: (err) => (err ? refused(err) : resync()) });
  watchStatus(nc);
  keepAlive(nc);
  $("login").hidden = true;
  $("cluster").hidden = false;
  $("logout").hidden = false;
  clearError();
  render();
  await resync();
}

// watchStatus follows the NATS connection: when it comes back, the master
// may be another, so the page re-subscribes.
async function watchStatus(nc) {
  for await (const s of nc.status()) {
    if (state.nc !== nc) {
      return;
    }
    if (s.type === "disconnect" || s.type === "reconnecting") {
      setStatus("connection to NATS lost; reconnecting…", "bad");
    } else if (s.type === "reconnect") {
      resync();
    } else if (s.type === "error" && s.error instanceof natsErrors.PermissionViolationError) {
      brokerRefused(nc);
    }
  }
}

// keepAlive pings the master, so that it keeps this control (and what it
// follows) while the page is open, and notices a master that changed.
async function keepAlive(nc) {
  while (state.nc === nc && !nc.isClosed()) {
    await new Promise((r) => setTimeout(r, 5000));
    if (state.nc !== nc || syncing) {
      continue;
    }
    try {
      await request("ping", {}, 4000);
    } catch (e) {
      setStatus(`the master does not answer: ${e.message} (${e.code})`, "bad");
      resync();
    }
  }
}

// brokerRefused ends a login whose NATS user the server does not let
// subscribe or publish what control state.user needs: it is not that
// control's user (say a slave's, or another control's), and the page could
// show nothing. Back at the form, it says which user to log in with.
async function brokerRefused(nc) {
  if (!nc || state.nc !== nc) {
    return; // already logged out
  }
  const { user, login } = state;
  await logout();
  showError(new FabricError("permission_denied", `the NATS server does not let ${login} act as control ${user}: log in with that control's own NATS user (control-${user}, from fabric nats-config --controls ${user})`));
}

async function logout() {
  const nc = state.nc;
  state.nc = null;
  state.console = null;
  $("console").hidden = true;
  $("cluster").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setStatus("not connected");
  if (nc) {
    await nc.close();
  }
}

// --- actions ----------------------------------------------------------------

// act runs a request for a button or form, showing its failure.
async function act(what, fn) {
  clearError();
  try {
    await fn();
  } catch (e) {
    showError(e, what);
  }
}

function showError(e, what) {
  const code = e instanceof FabricError ? e.code : "internal";
  const text = $("error-text");
  text.textContent = "";
  if (what) {
    text.append(`${what}: `);
  }
  text.append(e.message, " ");
  const c = document.createElement("code");
  c.textContent = `(${code})`;
  text.append(c);
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function setStatus(text, kind = "") {
  const s = $("status");
  s.textContent = text;
  s.className = kind;
}

async function openConsole(id) {
  if (state.console?.id !== id) {
    state.console = { id, last: 0, atLast: new Set() };
    $("output").textContent = "";
  }
  $("console").hidden = false;
  renderConsoleTitle();
  $("command").focus();
  await act(`follow instance ${id}`, followOutput);
}

async function closeConsole() {
  state.console = null;
  $("console").hidden = true;
  await act("stop following", followOutput);
}

// showOutput appends a line of the open console's instance, once: a
// replayed line already shown (same time and text) is dropped.
function showOutput(line) {
  const c = state.console;
  if (!c || line.instance_id !== c.id || line.time < c.last) {
    return;
  }
  const key = `${line.level} ${line.message}`;
  if (line.time === c.last) {
    if (c.atLast.has(key)) {
      return;
    }
  } else {
    c.last = line.time;
    c.atLast.clear();
  }
  c.atLast.add(key);
  const time = new Date(line.time).toLocaleTimeString([], { hour12: false });
  appendOutput(`${time} [${line.level}] ${line.message}`, line.level);
}

function appendOutput(text, cls) {
  const out = $("output");
  const stick = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  out.append(div);
  while (out.childElementCount > 2000) {
    out.firstElementChild.remove();
  }
  if (stick) {
    out.scrollTop = out.scrollHeight;
  }
}

async function sendCommand(command) {
  const c = state.console;
  if (!c || command === "") {
    return;
  }
  if (state.history.at(-1) !== command) {
    state.history.push(command);
    state.history = state.history.slice(-100);
    localStorage.setItem("linkfabric.history", JSON.stringify(state.history));
  }
  state.historyAt = state.history.length;
  appendOutput(`> ${command}`, "sent");
  try {
    const { output } = await request("send_command", { instance_id: c.id, command });
    appendOutput(output, "answer");
  } catch (e) {
    appendOutput(`error: ${e.message} (${e.code})`, "failed");
  }
}

// --- rendering --------------------------------------------------------------

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  e.append(...children);
  return e;
}

function button(text, onclick, props = {}) {
  return el("button", { type: "button", onclick, textContent: text, ...props });
}

const sortedLive = (map, key) => [...map.values()].filter((e) => !e.is_deleted).sort((a, b) => a[key] - b[key]);

function render() {
  renderSlaves();
  renderInstances();
  renderConsoleTitle();
}

function renderSlaves() {
  const slaves = sortedLive(state.slaves, "slave_id");
  $("slaves").tBodies[0].replaceChildren(
    ...slaves.map((s) =>
      el(
        "tr",
        { id: `slave-${s.slave_id}` },
        el("td", {}, String(s.slave_id)),
        el("td", {}, s.name),
        el("td", { className: s.connected ? "yes" : "no" }, s.connected ? "yes" : "no"),
        el("td", {}, String(s.instances ?? "")),
        el("td", {}, s.version || ""),
        el("td", { title: s.last_seen_ms ? new Date(s.last_seen_ms).toISOString() : "" }, s.connected ? "now" : s.last_seen_ms ? new Date(s.last_seen_ms).toLocaleString() : "never"),
      ),
    ),
  );
  const sel = $("create-slave");
  const chosen = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "none yet"), ...slaves.map((s) => el("option", { value: String(s.slave_id) }, `${s.slave_id} ${s.name}`)));
  sel.value = chosen;
}

function renderInstances() {
  const slaves = sortedLive(state.slaves, "slave_id");
  const rows = sortedLive(state.instances, "instance_id").map((i) => {
    const id = i.instance_id;
    const assign = el("select", { ariaLabel: `slave for instance ${id}` }, el("option", { value: "" }, "—"), ...slaves.map((s) => el("option", { value: String(s.slave_id) }, `${s.slave_id} ${s.name}`)));
    assign.value = i.slave_id ? String(i.slave_id) : "";
    const del = state.deleting === id;
    return el(
      "tr",
      { id: `instance-${id}` },
      el("td", {}, String(id)),
      el("td", {}, i.name),
      el("td", {}, i.slave_id ? String(i.slave_id) : "—"),
      el("td", { className: `status ${i.status}` }, i.status),
      el(
        "td",
        { className: "actions" },
        button("Start", () => act(`start instance ${id}`, () => request("start_instance", { instance_id: id })), { className: "start" }),
        button("Stop", () => act(`stop instance ${id}`, () => request("stop_instance", { instance_id: id })), { className: "stop" }),
        button("Console", () => openConsole(id), { className: "open-console" }),
        assign,
        button("Assign", () => act(`assign instance ${id}`, () => request("assign_instance_command", { instance_id: id, slave_id: Number(assign.value) })), { className: "assign" }),
        button(del ? "Really delete?" : "Delete", () => deleteInstance(id), { className: "delete danger" }),
      ),
    );
  });
  // Keep the focus on the same button across a re-render.
  const focused = document.activeElement?.closest?.("#instances tr") ? [document.activeElement.closest("tr").id, document.activeElement.className] : null;
  $("instances").tBodies[0].replaceChildren(...rows);
  if (focused) {
    document.querySelector(`#${focused[0]} [class="${focused[1]}"]`)?.focus();
  }
}

function deleteInstance(id) {
  if (state.deleting !== id) {
    state.deleting = id; // a second press deletes
    renderInstances();
    return;
  }
  state.deleting = null;
  act(`delete instance ${id}`, () => request("delete_instance", { instance_id: id }));
  if (state.console?.id === id) {
    closeConsole();
  }
  renderInstances();
}

function renderConsoleTitle() {
  const c = state.console;
  if (c) {
    const i = state.instances.get(c.id);
    $("console-title").textContent = `Console: instance ${c.id}${i ? ` ${i.name} (${i.status})` : ""}`;
  }
}

function renderBans() {
  $("bans").tBodies[0].replaceChildren(
    ...state.bans.map((b) =>
      el("tr", {}, el("td", {}, b.name), el("td", {}, b.reason || ""), el("td", {}, button("Unban", () => setBanned(b.name, false, "")))),
    ),
  );
}

async function setBanned(name, banned, reason) {
  await act(`${banned ? "ban" : "unban"} ${name}`, async () => {
    const payload = { name, banned };
    if (banned && reason) {
      payload.reason = reason;
    }
    await request("set_player_banned", payload);
    await loadBans();
  });
}

// --- wiring -----------------------------------------------------------------

$("servers").textContent = cfg.servers.join(", ");
$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  connect({ user: $("user").value.trim(), natsUser: $("nats-user").value.trim(), password: $("password").value, token: $("token").value });
});
$("logout").addEventListener("click", logout);
$("error-close").addEventListener("click", clearError);
$("create-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = $("create-name").value.trim();
  const slave = Number($("create-slave").value);
  act(`create instance ${name}`, async () => {
    const { instance_id } = await request("create_instance", { name });
    $("create-name").value = "";
    if (slave) {
      await request("assign_instance_command", { instance_id, slave_id: slave });
    }
  });
});
$("ban-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  setBanned($("ban-name").value.trim(), true, $("ban-reason").value.trim());
});
$("unban").addEventListener("click", () => {
  if ($("ban-form").reportValidity()) {
    setBanned($("ban-name").value.trim(), false, "");
  }
});
$("command-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $("command");
  const command = input.value.trim();
  input.value = "";
  sendCommand(command);
});
$("command").addEventListener("keydown", (ev) => {
  const h = state.history;
  if (ev.key === "ArrowUp" && state.historyAt > 0) {
    state.historyAt--;
  } else if (ev.key === "ArrowDown" && state.historyAt < h.length) {
    state.historyAt++;
  } else if (ev.key === "Escape") {
    closeConsole();
    return;
  } else {
    return;
  }
  ev.preventDefault();
  ev.target.value = h[state.historyAt] ?? "";
});
$("console-close").addEventListener("click", closeConsole);

try {
  state.history = JSON.parse(localStorage.getItem("linkfabric.history") || "[]");
} catch {
  state.history = [];
}
state.historyAt = state.history.length;

// #user=NAME fills in the control user (fabric dev prints such a URL); with
// no NATS user to log in as, the page connects at once.
const fragment = new URLSearchParams(location.hash.slice(1));
$("user").value = fragment.get("user") || localStorage.getItem("linkfabric.user") || "";
$("nats-user").value = fragment.get("nats_user") || (fragment.get("user") ? "" : localStorage.getItem("linkfabric.natsUser") || "");
if (fragment.get("user") && !fragment.get("nats_user")) {
  $("login-form").requestSubmit();
} else {
  $("user").focus();
}
